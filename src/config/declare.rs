//! The `settings!` macro: from the one table in `table.rs` to everything a setting needs.
//!
//! For each entry it makes a field of [`super::Layer`] (`Option<L>`, one layer of settings)
//! and of [`super::Config`] (the resolved type `C`), the [`super::spec::Spec`] row of
//! [`super::SETTINGS`], and the code that reads the layer from the command line (an
//! implementation of `clap::Args`), from a config file and from the environment, merges
//! layers, applies the default, validates, resolves to `C`, writes `--print-config` and
//! judges the value against the setting's status. Nothing here names a setting.
//!
//! An entry reads:
//!
//! ```text
//! /// Help text (the first line is the summary).
//! setting NAME: L = DEFAULT => C { Spec fields... }
//! check FN;                 // optional: fn(&L) -> Result<(), String>, on every layer
//! verdict FN;               // optional: fn(&C) -> Verdict, instead of the status's
//! convert TO_C, TO_L;       // optional: Option<L> -> C and &C -> Option<L>
//! parse FN;                 // optional: one flag value, fn(&str) -> Result<Item, String>
//! toml_value FN;            // optional: a config-file value, fn(toml::Value) -> Result<L, String>
//! env_value FN;             // optional: the env variable's text, fn(&str) -> Result<L, String>
//! ```
//!
//! `DEFAULT` is an `Option<L>`. `C` is `L` (the default applies; without one, `L::default()`)
//! or `Option<L>` (unset stays `None`) unless `convert` says otherwise.

/// The given expression, else the fallback (for the optional clauses).
macro_rules! given_or {
    ($fallback:expr;) => {
        $fallback
    };
    ($fallback:expr; $given:expr) => {
        $given
    };
}

macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])*
        setting $field:ident : $lty:ty = $default:expr => $cty:ty { $($spec:tt)* }
        $(check $check:expr;)?
        $(verdict $verdict:expr;)?
        $(convert $to_cfg:expr, $to_layer:expr;)?
        $(parse $parse:expr;)?
        $(toml_value $toml_value:expr;)?
        $(env_value $env_value:expr;)?
    )*) => {
        /// Positions in [`SETTINGS`], by setting.
        #[allow(non_camel_case_types, dead_code)]
        #[derive(Clone, Copy)]
        enum Idx { $($field),* }

        /// Every setting, in the table's order.
        pub static SETTINGS: &[Spec] = &[$(
            Spec {
                name: stringify!($field),
                help: concat!($($doc, "\n"),*),
                kind: <$lty as Value>::KIND,
                choices: <$lty as Value>::CHOICES,
                $($spec)*
                ..Spec::BASE
            }
        ),*];

        /// One layer of settings (defaults, environment, config file, `GUNICORN_CMD_ARGS`,
        /// command line): every field optional.
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct Layer {
            $($(#[doc = $doc])* pub $field: Option<$lty>,)*
        }

        /// The resolved configuration a server runs with.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Config {
            $($(#[doc = $doc])* pub $field: $cty,)*
            /// The config file that was read, if any (not a setting; kept for reloads and
            /// messages).
            pub source_file: Option<PathBuf>,
            /// Whether `bind` was configured (flag, file or `PORT`) rather than left at the
            /// default.
            pub bind_explicit: bool,
            /// What the start-up checks found worth one info line each (settings accepted
            /// with no effect here).
            pub notices: Vec<String>,
            /// The server hooks a Python config file defined.
            pub hooks: HookSet,
        }

        impl Layer {
            /// `self` where set, else `lower`.
            pub fn over(self, lower: Layer) -> Layer {
                Layer { $($field: self.$field.or(lower.$field)),* }
            }

            /// The table's defaults.
            pub(crate) fn defaults() -> Layer {
                Layer { $($field: $default),* }
            }

            /// Whether the setting called `name` is set in this layer.
            pub(crate) fn is_set(&self, name: &str) -> bool {
                $(if name == stringify!($field) {
                    return self.$field.is_some();
                })*
                false
            }

            /// The table's checks of each value that is set: the setting and why not.
            pub(crate) fn check_values(&self) -> Result<(), (&'static Spec, String)> {
                $($(
                    if let Some(v) = &self.$field {
                        let check: fn(&$lty) -> Result<(), String> = $check;
                        check(v).map_err(|e| (&SETTINGS[Idx::$field as usize], e))?;
                    }
                )?)*
                Ok(())
            }

            /// Sets `spec`'s setting from a config-file value.
            pub(crate) fn set_toml(&mut self, spec: &Spec, v: toml::Value) -> Result<(), String> {
                $(if spec.name == stringify!($field) {
                    let read: fn(toml::Value) -> Result<$lty, String> = given_or!(
                        |v| <$lty as Value>::from_toml(
                            v,
                            SETTINGS[Idx::$field as usize].shape == Shape::Comma,
                        );
                        $($toml_value)?
                    );
                    self.$field = Some(read(v)?);
                    return Ok(());
                })*
                Err(format!("no setting {}", spec.name))
            }

            /// Sets `spec`'s setting from text, parsed as its flag's value is (a Python config
            /// file's `workers = "4"`).
            pub(crate) fn set_text(&mut self, spec: &Spec, text: &str) -> Result<(), String> {
                $(if spec.name == stringify!($field) {
                    self.$field = Some(env_value::<$lty>(
                        text,
                        SETTINGS[Idx::$field as usize].shape == Shape::Comma,
                        given_or!(<$lty as Value>::parse_item; $($parse)?),
                    )?);
                    return Ok(());
                })*
                Err(format!("no setting {}", spec.name))
            }

            /// The setting called `name` as a config-file value, if set.
            pub fn get_toml(&self, name: &str) -> Option<toml::Value> {
                $(if name == stringify!($field) {
                    return self.$field.as_ref().map(<$lty as Value>::to_toml);
                })*
                None
            }

            /// The settings the environment variables in the table set, read with `get`.
            /// Errors name the variable and its value.
            pub(crate) fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Result<Layer, String> {
                let mut l = Layer::default();
                $({
                    let spec = &SETTINGS[Idx::$field as usize];
                    if let Some(var) = spec.env
                        && let Some(text) = get(var).filter(|v| !v.trim().is_empty())
                    {
                        let parse: fn(&str) -> Result<$lty, String> = given_or!(
                            |s| env_value::<$lty>(
                                s,
                                SETTINGS[Idx::$field as usize].shape == Shape::Comma,
                                given_or!(<$lty as Value>::parse_item; $($parse)?),
                            );
                            $($env_value)?
                        );
                        l.$field = Some(parse(&text).map_err(|e| format!("{var}={text}: {e}"))?);
                    }
                })*
                Ok(l)
            }
        }

        impl Config {
            /// `l` (already over the defaults) resolved to the configuration's types.
            pub(crate) fn resolve(l: Layer) -> Config {
                Config {
                    $($field: given_or!(
                        <$cty as Resolve<$lty>>::resolve(l.$field);
                        $(($to_cfg)(l.$field))?
                    ),)*
                    source_file: None,
                    bind_explicit: false,
                    notices: Vec::new(),
                    hooks: HookSet::default(),
                }
            }

            /// Every setting, as a layer (used by `--print-config`).
            pub fn to_layer(&self) -> Layer {
                Layer {
                    $($field: given_or!(
                        <$cty as Resolve<$lty>>::unresolve(&self.$field);
                        $(($to_layer)(&self.$field))?
                    ),)*
                }
            }

            /// Each setting's verdict, given the configuration with nothing set.
            pub(crate) fn verdicts(&self, defaults: &Config) -> Vec<(&'static Spec, Verdict)> {
                let mut out = Vec::new();
                $({
                    let spec = &SETTINGS[Idx::$field as usize];
                    let custom: Option<fn(&$cty) -> Verdict> =
                        given_or!(None; $(Some((|v: &$cty| ($verdict)(v)) as fn(&$cty) -> Verdict))?);
                    let v = match custom {
                        Some(f) => f(&self.$field),
                        None => status_verdict(spec, self.$field == defaults.$field),
                    };
                    out.push((spec, v));
                })*
                out
            }

            /// Whether the setting called `name` has its default value.
            pub(crate) fn is_default(&self, name: &str, defaults: &Config) -> bool {
                $(if name == stringify!($field) {
                    return self.$field == defaults.$field;
                })*
                true
            }
        }

        impl clap::Args for Layer {
            fn augment_args(cmd: clap::Command) -> clap::Command {
                let mut cmd = cmd;
                $(
                    cmd = add_arg::< <$lty as Value>::Item >(
                        cmd,
                        &SETTINGS[Idx::$field as usize],
                        given_or!(<$lty as Value>::parse_item; $($parse)?),
                        <$lty as Value>::CHOICES,
                        || {
                            let d: Option<$lty> = $default;
                            d.map(|v| <$lty as Value>::to_toml(&v))
                        },
                    );
                )*
                cmd
            }

            fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
                Self::augment_args(cmd)
            }
        }

        impl clap::FromArgMatches for Layer {
            fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
                let mut l = Layer::default();
                l.update_from_arg_matches(m)?;
                Ok(l)
            }

            fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
                $(
                    if let Some(items) = read_items::< <$lty as Value>::Item >(m, stringify!($field))
                        && let Some(v) = <$lty as Value>::from_items(items)
                    {
                        self.$field = Some(v);
                    }
                )*
                Ok(())
            }
        }
    };
}

/// Gunicorn's server hooks, declared by name (see [`super::spec::Hook`]).
macro_rules! hooks {
    ($(
        $(#[doc = $doc:literal])*
        hook $name:ident ($($arg:ident),*) => $status:expr;
    )*) => {
        /// Every server hook Gunicorn has, in its documentation's order.
        pub static HOOKS: &[Hook] = &[$(
            Hook {
                name: stringify!($name),
                signature: concat!(stringify!($name), "(", stringify!($($arg),*), ")"),
                help: concat!($($doc, "\n"),*),
                status: $status,
            }
        ),*];
    };
}
