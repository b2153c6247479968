//! The types a setting can have, and how each is read from a flag, an environment variable
//! and a config file, and written back by `--print-config`.
//!
//! A setting's type implements [`Value`]. Single values (`u32`, `String`, a [`LogLevel`], a
//! bind address, ...) implement [`Scalar`]; a `Vec` of scalars is a list (one item per flag,
//! or comma-separated). A config file may give a list as one string (Gunicorn's legacy form:
//! `bind = "127.0.0.1:8000"`, `pythonpath = "a,b"`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::sockets::BindAddr;

/// A setting's type.
pub trait Value: Sized + Clone + PartialEq + fmt::Debug + Send + Sync + 'static {
    /// What one command-line value parses to (the element, for a list).
    type Item: Clone + Send + Sync + 'static;
    /// Gunicorn's word for the type, for the docs: `int`, `bool`, `string`, `list`, `dict`.
    const KIND: &'static str;
    /// The accepted values, when they are a fixed set (listed by `--help` and in errors).
    const CHOICES: Option<&'static [&'static str]> = None;

    fn parse_item(s: &str) -> Result<Self::Item, String>;
    /// The value from the items of every occurrence of the flag; `None` for none.
    fn from_items(items: Vec<Self::Item>) -> Option<Self>;
    /// From a config file; `comma` says a string may hold several comma-separated items.
    fn from_toml(v: toml::Value, comma: bool) -> Result<Self, String>;
    fn to_toml(&self) -> toml::Value;
}

/// A single value (not a list).
pub trait Scalar: Sized + Clone + PartialEq + fmt::Debug + Send + Sync + 'static {
    const KIND: &'static str;
    const CHOICES: Option<&'static [&'static str]> = None;
    fn parse(s: &str) -> Result<Self, String>;
    fn from_toml(v: toml::Value) -> Result<Self, String>;
    fn to_toml(&self) -> toml::Value;
}

/// Every scalar is a value: the last occurrence of its flag counts.
macro_rules! scalar_values {
    ($($t:ty),* $(,)?) => {$(
        impl Value for $t {
            type Item = $t;
            const KIND: &'static str = <$t as Scalar>::KIND;
            const CHOICES: Option<&'static [&'static str]> = <$t as Scalar>::CHOICES;
            fn parse_item(s: &str) -> Result<$t, String> {
                <$t as Scalar>::parse(s)
            }
            fn from_items(items: Vec<$t>) -> Option<$t> {
                items.into_iter().last()
            }
            fn from_toml(v: toml::Value, _comma: bool) -> Result<$t, String> {
                <$t as Scalar>::from_toml(v)
            }
            fn to_toml(&self) -> toml::Value {
                <$t as Scalar>::to_toml(self)
            }
        }
    )*};
}

scalar_values!(
    u32,
    u64,
    bool,
    String,
    PathBuf,
    LogLevel,
    BindAddr,
    ProxyProtocol
);

impl<T: Scalar> Value for Vec<T> {
    type Item = T;
    const KIND: &'static str = "list";
    const CHOICES: Option<&'static [&'static str]> = T::CHOICES;

    fn parse_item(s: &str) -> Result<T, String> {
        T::parse(s)
    }

    fn from_items(items: Vec<T>) -> Option<Vec<T>> {
        Some(items).filter(|v| !v.is_empty())
    }

    fn from_toml(v: toml::Value, comma: bool) -> Result<Vec<T>, String> {
        match v {
            toml::Value::Array(a) => a.into_iter().map(T::from_toml).collect(),
            toml::Value::String(s) if comma => s
                .split(',')
                .map(str::trim)
                .filter(|i| !i.is_empty())
                .map(|i| T::from_toml(toml::Value::String(i.to_string())))
                .collect(),
            one => Ok(vec![T::from_toml(one)?]),
        }
    }

    fn to_toml(&self) -> toml::Value {
        toml::Value::Array(self.iter().map(T::to_toml).collect())
    }
}

/// A config-file value through serde, with serde's message ("invalid type: string ...,
/// expected u32").
fn serde_from<T: for<'de> Deserialize<'de>>(v: toml::Value) -> Result<T, String> {
    v.try_into::<T>()
        .map_err(|e| e.message().trim().replace('\n', " "))
}

fn serde_to<T: Serialize>(v: &T) -> toml::Value {
    toml::Value::try_from(v).expect("a setting's value is representable in TOML")
}

macro_rules! serde_scalars {
    ($($t:ty => $kind:literal),* $(,)?) => {$(
        impl Scalar for $t {
            const KIND: &'static str = $kind;
            fn parse(s: &str) -> Result<$t, String> {
                s.trim().parse::<$t>().map_err(|e| e.to_string())
            }
            fn from_toml(v: toml::Value) -> Result<$t, String> {
                serde_from(v)
            }
            fn to_toml(&self) -> toml::Value {
                serde_to(self)
            }
        }
    )*};
}

serde_scalars!(u32 => "int", u64 => "int");

impl Scalar for String {
    const KIND: &'static str = "string";
    fn parse(s: &str) -> Result<String, String> {
        Ok(s.to_string())
    }
    fn from_toml(v: toml::Value) -> Result<String, String> {
        serde_from(v)
    }
    fn to_toml(&self) -> toml::Value {
        toml::Value::String(self.clone())
    }
}

impl Scalar for PathBuf {
    const KIND: &'static str = "string";
    fn parse(s: &str) -> Result<PathBuf, String> {
        Ok(PathBuf::from(s))
    }
    fn from_toml(v: toml::Value) -> Result<PathBuf, String> {
        serde_from(v)
    }
    fn to_toml(&self) -> toml::Value {
        serde_to(self)
    }
}

impl Scalar for bool {
    const KIND: &'static str = "bool";
    /// `true`/`false` as Gunicorn's `validate_bool` takes them, and the `y`/`yes`/`1` forms its
    /// `SENDFILE` variable takes; any case.
    fn parse(s: &str) -> Result<bool, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "on" | "1" => Ok(true),
            "false" | "no" | "n" | "off" | "0" => Ok(false),
            _ => Err(format!("'{s}' is not a boolean: expected true or false")),
        }
    }
    fn from_toml(v: toml::Value) -> Result<bool, String> {
        serde_from(v)
    }
    fn to_toml(&self) -> toml::Value {
        toml::Value::Boolean(*self)
    }
}

impl Scalar for BindAddr {
    const KIND: &'static str = "string";
    fn parse(s: &str) -> Result<BindAddr, String> {
        s.parse()
    }
    fn from_toml(v: toml::Value) -> Result<BindAddr, String> {
        serde_from(v)
    }
    fn to_toml(&self) -> toml::Value {
        toml::Value::String(self.to_string())
    }
}

/// The tables (Gunicorn's `secure_scheme_headers`, `logconfig_dict`): config file only.
macro_rules! table_values {
    ($($t:ty => $from:expr),* $(,)?) => {$(
        impl Value for $t {
            type Item = String;
            const KIND: &'static str = "dict";
            fn parse_item(_: &str) -> Result<String, String> {
                Err("a table: set it in the config file".into())
            }
            fn from_items(_: Vec<String>) -> Option<Self> {
                None
            }
            fn from_toml(v: toml::Value, _comma: bool) -> Result<Self, String> {
                let from: fn(toml::Value) -> Result<$t, String> = $from;
                from(v)
            }
            fn to_toml(&self) -> toml::Value {
                serde_to(self)
            }
        }
    )*};
}

table_values!(
    toml::Table => |v| match v {
        toml::Value::Table(t) => Ok(t),
        other => Err(format!("invalid type: {}, expected a table", other.type_str())),
    },
);

/// A table of strings (Gunicorn's `secure_scheme_headers`): a TOML table in a config file; on a
/// command line `NAME=VALUE` items, comma-separated (an empty value is the empty table).
impl Value for BTreeMap<String, String> {
    type Item = String;
    const KIND: &'static str = "dict";

    fn parse_item(s: &str) -> Result<String, String> {
        let s = s.trim();
        match s.split_once('=') {
            _ if s.is_empty() => Ok(String::new()),
            Some((k, _)) if !k.trim().is_empty() => Ok(s.to_string()),
            _ => Err(format!("'{s}': expected NAME=VALUE")),
        }
    }

    fn from_items(items: Vec<String>) -> Option<Self> {
        if items.is_empty() {
            return None;
        }
        Some(
            items
                .iter()
                .filter_map(|i| i.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect(),
        )
    }

    fn from_toml(v: toml::Value, _comma: bool) -> Result<Self, String> {
        serde_from(v)
    }

    fn to_toml(&self) -> toml::Value {
        serde_to(self)
    }
}

/// `--log-level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    #[serde(alias = "DEBUG")]
    Debug,
    #[default]
    #[serde(alias = "INFO")]
    Info,
    #[serde(alias = "WARNING", alias = "warn", alias = "WARN")]
    Warning,
    #[serde(alias = "ERROR")]
    Error,
    #[serde(alias = "CRITICAL")]
    Critical,
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warning => "warning",
            LogLevel::Error => "error",
            LogLevel::Critical => "critical",
        })
    }
}

impl Scalar for LogLevel {
    const KIND: &'static str = "string";
    const CHOICES: Option<&'static [&'static str]> =
        Some(&["debug", "info", "warning", "error", "critical"]);
    fn parse(s: &str) -> Result<LogLevel, String> {
        serde_from(toml::Value::String(s.trim().to_ascii_lowercase()))
    }
    fn from_toml(v: toml::Value) -> Result<LogLevel, String> {
        serde_from(v)
    }
    fn to_toml(&self) -> toml::Value {
        toml::Value::String(self.to_string())
    }
}

/// `--proxy-protocol`: Gunicorn's modes since 24.1 (a boolean before: `true` is `auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyProtocol {
    #[default]
    Off,
    V1,
    V2,
    Auto,
}

impl Scalar for ProxyProtocol {
    const KIND: &'static str = "string";
    const CHOICES: Option<&'static [&'static str]> =
        Some(&["off", "v1", "v2", "auto", "true", "false"]);
    fn parse(s: &str) -> Result<ProxyProtocol, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" | "false" => Ok(ProxyProtocol::Off),
            "v1" => Ok(ProxyProtocol::V1),
            "v2" => Ok(ProxyProtocol::V2),
            "auto" | "true" => Ok(ProxyProtocol::Auto),
            _ => Err(format!("'{s}': expected off, v1, v2 or auto")),
        }
    }
    fn from_toml(v: toml::Value) -> Result<ProxyProtocol, String> {
        match v {
            toml::Value::Boolean(true) => Ok(ProxyProtocol::Auto),
            toml::Value::Boolean(false) => Ok(ProxyProtocol::Off),
            toml::Value::String(s) => Self::parse(&s),
            other => Err(format!(
                "invalid type: {}, expected off, v1, v2 or auto",
                other.type_str()
            )),
        }
    }
    fn to_toml(&self) -> toml::Value {
        toml::Value::String(
            match self {
                ProxyProtocol::Off => "off",
                ProxyProtocol::V1 => "v1",
                ProxyProtocol::V2 => "v2",
                ProxyProtocol::Auto => "auto",
            }
            .into(),
        )
    }
}

/// `--umask` (and Gunicorn's other modes): octal with a leading `0` or `0o` (`007`, `0o007`),
/// hexadecimal with `0x`, else decimal — Gunicorn's `auto_int`.
pub fn parse_umask(s: &str) -> Result<u32, String> {
    let s = s.trim();
    let v = if let Some(o) = s.strip_prefix("0o").or_else(|| s.strip_prefix("0O")) {
        u32::from_str_radix(o, 8)
    } else if let Some(x) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u32::from_str_radix(x, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        u32::from_str_radix(&s[1..], 8)
    } else {
        s.parse()
    };
    match v {
        Ok(m) if m <= 0o777 => Ok(m),
        _ => Err("expected an octal mask like 0o022 or 022 (at most 0o777)".into()),
    }
}

/// How a layer's value becomes the configuration's: `C` is `L` itself (the default applied
/// before, else `L::default()`) or `Option<L>` (unset stays `None`).
pub trait Resolve<L>: Sized {
    fn resolve(v: Option<L>) -> Self;
    fn unresolve(&self) -> Option<L>;
}

impl<T: Default + Clone> Resolve<T> for T {
    fn resolve(v: Option<T>) -> T {
        v.unwrap_or_default()
    }
    fn unresolve(&self) -> Option<T> {
        Some(self.clone())
    }
}

impl<T: Clone> Resolve<T> for Option<T> {
    fn resolve(v: Option<T>) -> Option<T> {
        v
    }
    fn unresolve(&self) -> Option<T> {
        self.clone()
    }
}

/// An environment variable's text as a setting's value (several comma-separated items when
/// `comma`).
pub fn env_value<T: Value>(
    s: &str,
    comma: bool,
    parse: fn(&str) -> Result<T::Item, String>,
) -> Result<T, String> {
    let items = if comma {
        s.split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .map(parse)
            .collect::<Result<Vec<_>, _>>()?
    } else {
        vec![parse(s.trim())?]
    };
    T::from_items(items).ok_or_else(|| "no value".to_string())
}

/// A range check for the table's `check` clauses.
pub fn range<T: PartialOrd + fmt::Display + Copy>(v: T, lo: T, hi: T) -> Result<(), String> {
    if v < lo || v > hi {
        Err(format!("{v} is out of range: expected {lo} to {hi}"))
    } else {
        Ok(())
    }
}

/// A check that a string is one of a fixed set (Gunicorn validates these the same way).
pub fn one_of(v: &str, choices: &[&str]) -> Result<(), String> {
    if choices.contains(&v) {
        Ok(())
    } else {
        Err(format!("'{v}': expected one of {}", choices.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_take_gunicorns_string_forms() {
        let one = <Vec<BindAddr> as Value>::from_toml("127.0.0.1:9".into(), false).unwrap();
        assert_eq!(one.len(), 1);
        let two = <Vec<String> as Value>::from_toml("a, b".into(), true).unwrap();
        assert_eq!(two, ["a", "b"]);
        let kept = <Vec<String> as Value>::from_toml("A=1,2".into(), false).unwrap();
        assert_eq!(kept, ["A=1,2"]);
    }

    #[test]
    fn scalars_parse_like_gunicorn() {
        assert_eq!(<bool as Scalar>::parse("TRUE"), Ok(true));
        assert!(<bool as Scalar>::parse("maybe").is_err());
        assert_eq!(<LogLevel as Scalar>::parse("WARN"), Ok(LogLevel::Warning));
        assert_eq!(
            <ProxyProtocol as Scalar>::from_toml(true.into()),
            Ok(ProxyProtocol::Auto)
        );
        assert_eq!(parse_umask("0x1ff"), Ok(0o777));
        assert!(parse_umask("0o1000").is_err() && parse_umask("x").is_err());
    }
}
