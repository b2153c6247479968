//! WebSocket echo load generator for the benchmark suite (`bench/driver.py`, app `wsecho`):
//! N connections, each sending a small text message and waiting for its echo, for a fixed
//! time; prints one JSON line (messages, rate, latency percentiles, errors).
//!
//! `cargo run --release --example wsload -- [--unix PATH] [-c N] [-d SECONDS] [--size BYTES] URL`
//!
//! Loopback only: the URL must name 127.0.0.0/8, ::1 or localhost (or `--unix`). One thread
//! (the suite pins it to the load CPU).

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

struct Args {
    url: String,
    unix: Option<String>,
    conns: usize,
    seconds: f64,
    size: usize,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        url: String::new(),
        unix: None,
        conns: 50,
        seconds: 10.0,
        size: 16,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut val = || it.next().ok_or(format!("{x} needs a value"));
        match x.as_str() {
            "--unix" => a.unix = Some(val()?),
            "-c" => a.conns = val()?.parse().map_err(|_| "bad -c")?,
            "-d" => a.seconds = val()?.parse().map_err(|_| "bad -d")?,
            "--size" => a.size = val()?.parse().map_err(|_| "bad --size")?,
            _ if x.starts_with("ws://") => a.url = x,
            _ => return Err(format!("unknown argument {x}")),
        }
    }
    if a.url.is_empty() {
        return Err("no ws:// URL".into());
    }
    let host = a.url["ws://".len()..]
        .split(['/', ':'])
        .next()
        .unwrap_or("");
    if a.unix.is_none() && !(host.starts_with("127.") || host == "localhost" || host == "[") {
        return Err(format!("{host}: loopback addresses only"));
    }
    if !(1..=10_000).contains(&a.conns) || !(0.1..=600.0).contains(&a.seconds) {
        return Err("-c 1..10000, -d 0.1..600".into());
    }
    Ok(a)
}

#[derive(Default)]
struct Tally {
    messages: u64,
    errors: u64,
    lat_us: Vec<u32>,
}

async fn one(a: std::rc::Rc<Args>, until: Instant) -> Tally {
    let mut t = Tally::default();
    let payload = "x".repeat(a.size);
    macro_rules! run {
        ($stream:expr) => {{
            let (mut ws, _) = match tokio_tungstenite::client_async(a.url.as_str(), $stream).await {
                Ok(x) => x,
                Err(_) => {
                    t.errors += 1;
                    return t;
                }
            };
            while Instant::now() < until {
                let sent = Instant::now();
                if ws
                    .send(Message::Text(payload.clone().into()))
                    .await
                    .is_err()
                {
                    t.errors += 1;
                    break;
                }
                match ws.next().await {
                    Some(Ok(Message::Text(m))) if m.len() == payload.len() => {
                        t.messages += 1;
                        t.lat_us
                            .push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    }
                    _ => {
                        t.errors += 1;
                        break;
                    }
                }
            }
            let _ = ws.close(None).await;
        }};
    }
    match &a.unix {
        Some(p) => match tokio::net::UnixStream::connect(p).await {
            Ok(s) => run!(s),
            Err(_) => t.errors += 1,
        },
        None => {
            let hostport = a.url["ws://".len()..].split('/').next().unwrap_or("");
            match tokio::net::TcpStream::connect(hostport).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    run!(s)
                }
                Err(_) => t.errors += 1,
            }
        }
    }
    t
}

fn main() {
    let a = match args() {
        Ok(a) => std::rc::Rc::new(a),
        Err(e) => {
            eprintln!("wsload: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(a.seconds);
    let all = local.block_on(&rt, async {
        let mut hs = Vec::new();
        for _ in 0..a.conns {
            hs.push(tokio::task::spawn_local(one(a.clone(), until)));
        }
        let mut all = Tally::default();
        for h in hs {
            if let Ok(t) = h.await {
                all.messages += t.messages;
                all.errors += t.errors;
                all.lat_us.extend(t.lat_us);
            }
        }
        all
    });
    let secs = start.elapsed().as_secs_f64();
    let mut lat = all.lat_us;
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        lat[((lat.len() - 1) as f64 * p) as usize] as f64 / 1000.0
    };
    println!(
        "{{\"messages\": {}, \"seconds\": {:.3}, \"rate\": {:.1}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}, \"errors\": {}}}",
        all.messages,
        secs,
        all.messages as f64 / secs,
        pct(0.5),
        pct(0.99),
        all.errors
    );
}
