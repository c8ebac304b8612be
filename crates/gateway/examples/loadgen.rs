//! A fixed-rate (open-loop) HTTP load generator for `bench/gateway.sh`.
//!
//! Requests are scheduled at exact instants (`start + i / rate`) by a pacing thread and sent
//! whether or not earlier ones have answered, so a slow server cannot slow the load down and
//! hide its own stalls (coordinated omission). Each latency is measured from the request's
//! *scheduled* instant to the end of its response body, so a late send counts against the
//! server exactly as a client on a fixed schedule would feel it. The same binary and the same
//! settings are used against every target, so its own cost cancels out in the differences.
//!
//! ```text
//! loadgen --url URL [--rate 1000] [--duration-secs 10] [--warmup-secs 2] [--method GET]
//!         [--body TEXT] [--header 'name: value']... [--max-inflight 256] [--label NAME]
//! ```
//!
//! Prints one JSON line: counts by status, errors, and latency percentiles in microseconds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use serde_json::json;
use tokio::sync::{mpsc, Semaphore};

/// Settings from the command line.
struct Settings {
    url: Url,
    method: Method,
    body: Option<String>,
    headers: HeaderMap,
    rate: f64,
    duration: Duration,
    warmup: Duration,
    max_inflight: usize,
    label: String,
    timeout: Duration,
}

fn usage() -> String {
    "usage: loadgen --url URL [--rate N] [--duration-secs S] [--warmup-secs S] [--method M] \
     [--body TEXT] [--header 'name: value']... [--max-inflight N] [--label NAME] \
     [--timeout-secs S]"
        .to_owned()
}

fn parse_args(args: &[String]) -> Result<Settings, String> {
    let mut url = None;
    let mut method = Method::GET;
    let mut body = None;
    let mut headers = HeaderMap::new();
    let mut rate = 1000.0_f64;
    let mut duration = 10.0_f64;
    let mut warmup = 2.0_f64;
    let mut max_inflight = 256_usize;
    let mut label = String::new();
    let mut timeout = 10.0_f64;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value\n{}", usage()))
        };
        let number = |v: String| {
            v.parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n >= 0.0)
                .ok_or_else(|| format!("{flag}: {v:?} is not a non-negative number"))
        };
        match flag.as_str() {
            "--url" => {
                let v = value()?;
                url = Some(Url::parse(&v).map_err(|e| format!("--url {v:?}: {e}"))?);
            }
            "--method" => {
                let v = value()?;
                method = Method::from_bytes(v.as_bytes())
                    .map_err(|_| format!("--method: {v:?} is not an HTTP method"))?;
            }
            "--body" => body = Some(value()?),
            "--header" => {
                let v = value()?;
                let (name, val) = v
                    .split_once(':')
                    .ok_or_else(|| format!("--header {v:?}: expected 'name: value'"))?;
                let name = HeaderName::from_bytes(name.trim().as_bytes())
                    .map_err(|_| format!("--header: bad name {name:?}"))?;
                let val = HeaderValue::from_str(val.trim())
                    .map_err(|_| format!("--header: bad value for {name}"))?;
                headers.append(name, val);
            }
            "--rate" => rate = number(value()?)?,
            "--duration-secs" => duration = number(value()?)?,
            "--warmup-secs" => warmup = number(value()?)?,
            "--timeout-secs" => timeout = number(value()?)?,
            "--max-inflight" => {
                let v = value()?;
                max_inflight =
                    v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        format!("--max-inflight: {v:?} is not a positive integer")
                    })?;
            }
            "--label" => label = value()?,
            "-h" | "--help" => return Err(usage()),
            other => return Err(format!("unknown argument {other:?}\n{}", usage())),
        }
    }
    let url = url.ok_or_else(|| format!("--url is required\n{}", usage()))?;
    if !(1.0..=1_000_000.0).contains(&rate) {
        return Err("--rate must be between 1 and 1000000".to_owned());
    }
    if duration <= 0.0 || duration > 600.0 || warmup > 600.0 || timeout <= 0.0 {
        return Err(
            "--duration-secs must be in (0, 600], --warmup-secs at most 600, \
                    --timeout-secs positive"
                .to_owned(),
        );
    }
    Ok(Settings {
        url,
        method,
        body,
        headers,
        rate,
        duration: Duration::from_secs_f64(duration),
        warmup: Duration::from_secs_f64(warmup),
        max_inflight,
        label,
        timeout: Duration::from_secs_f64(timeout),
    })
}

/// What one scheduled request did.
struct Sample {
    measured: bool,
    /// From the scheduled instant to the end of the response body.
    latency: Duration,
    /// From the scheduled instant to the moment the request task started.
    send_lag: Duration,
    status: Option<u16>,
}

/// Nearest-rank percentile of sorted microsecond values.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let settings = match parse_args(&args) {
        Ok(s) => s,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    match run(settings) {
        Ok(line) => println!("{line}"),
        Err(message) => {
            eprintln!("loadgen: {message}");
            std::process::exit(1);
        }
    }
}

fn run(s: Settings) -> Result<String, String> {
    // One worker thread: the generator shares the machine with the servers it measures.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .timeout(s.timeout)
        .pool_max_idle_per_host(s.max_inflight)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let mut template = reqwest::Request::new(s.method.clone(), s.url.clone());
    *template.headers_mut() = s.headers.clone();
    if let Some(body) = &s.body {
        *template.body_mut() = Some(reqwest::Body::from(body.clone()));
    }
    let template = Arc::new(template);
    let permits = Arc::new(Semaphore::new(s.max_inflight));
    let (tx, mut rx) = mpsc::unbounded_channel::<Sample>();

    let interval = 1.0 / s.rate;
    let warmup_n = (s.warmup.as_secs_f64() * s.rate).round() as u64;
    let measured_n = (s.duration.as_secs_f64() * s.rate).round() as u64;
    let total = warmup_n + measured_n;
    let handle = runtime.handle().clone();
    let start = Instant::now() + Duration::from_millis(20);

    // The pacing thread: std sleeps are far finer than the runtime's 1 ms timer wheel.
    let pacer = {
        let client = client.clone();
        let template = Arc::clone(&template);
        let permits = Arc::clone(&permits);
        std::thread::spawn(move || {
            for i in 0..total {
                let scheduled = start + Duration::from_secs_f64(i as f64 * interval);
                let now = Instant::now();
                if scheduled > now {
                    std::thread::sleep(scheduled - now);
                }
                let Some(request) = template.try_clone() else {
                    return;
                };
                let client = client.clone();
                let permits = Arc::clone(&permits);
                let tx = tx.clone();
                let measured = i >= warmup_n;
                handle.spawn(async move {
                    let send_lag = scheduled.elapsed();
                    // Waiting for a slot counts: the clock runs from the scheduled instant.
                    let _permit = permits.acquire().await;
                    let status = match client.execute(request).await {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            match response.bytes().await {
                                Ok(_) => Some(status),
                                Err(_) => None,
                            }
                        }
                        Err(_) => None,
                    };
                    let _ = tx.send(Sample {
                        measured,
                        latency: scheduled.elapsed(),
                        send_lag,
                        status,
                    });
                });
            }
        })
    };

    let (latencies, lags, statuses, errors, received) = runtime.block_on(async move {
        let mut latencies = Vec::with_capacity(measured_n as usize);
        let mut lags = Vec::with_capacity(measured_n as usize);
        let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
        let mut errors = 0_u64;
        let mut received = 0_u64;
        // Every sender (the pacer's and each task's clone) is gone once all have answered.
        while let Some(sample) = rx.recv().await {
            received += 1;
            if !sample.measured {
                continue;
            }
            latencies.push(sample.latency.as_micros() as u64);
            lags.push(sample.send_lag.as_micros() as u64);
            match sample.status {
                Some(code) => *statuses.entry(code).or_default() += 1,
                None => errors += 1,
            }
        }
        (latencies, lags, statuses, errors, received)
    });
    pacer
        .join()
        .map_err(|_| "the pacing thread panicked".to_owned())?;
    let elapsed = start.elapsed();
    let mut latencies = latencies;
    latencies.sort_unstable();
    let mut lags = lags;
    lags.sort_unstable();
    let mean = if latencies.is_empty() {
        0.0
    } else {
        latencies.iter().sum::<u64>() as f64 / latencies.len() as f64
    };
    let ok = statuses
        .iter()
        .filter(|(code, _)| (200..300).contains(*code))
        .map(|(_, n)| n)
        .sum::<u64>();
    let by_status: BTreeMap<String, u64> =
        statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    Ok(json!({
        "label": s.label,
        "rate": s.rate,
        "duration_s": s.duration.as_secs_f64(),
        "scheduled": total,
        "received": received,
        "measured": latencies.len(),
        "ok_2xx": ok,
        "status": by_status,
        "errors": errors,
        "elapsed_s": elapsed.as_secs_f64(),
        "p50_us": percentile(&latencies, 50.0),
        "p90_us": percentile(&latencies, 90.0),
        "p99_us": percentile(&latencies, 99.0),
        "p999_us": percentile(&latencies, 99.9),
        "max_us": latencies.last().copied().unwrap_or(0),
        "mean_us": mean.round(),
        "send_lag_p50_us": percentile(&lags, 50.0),
        "send_lag_p99_us": percentile(&lags, 99.0),
    })
    .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[], 50.0), 0);
        assert_eq!(percentile(&[7], 99.9), 7);
    }

    #[test]
    fn arguments_are_checked() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(parse_args(&args(&[])).is_err());
        assert!(parse_args(&args(&["--url", "http://127.0.0.1:1/", "--rate", "0"])).is_err());
        assert!(parse_args(&args(&["--url", "http://127.0.0.1:1/", "--header", "x"])).is_err());
        assert!(parse_args(&args(&["--url", "http://127.0.0.1:1/", "--bogus"])).is_err());
        let s = parse_args(&args(&[
            "--url",
            "http://127.0.0.1:1/a?b=1",
            "--rate",
            "500",
            "--method",
            "POST",
            "--header",
            "content-type: application/json",
            "--body",
            "{}",
        ]))
        .unwrap();
        assert_eq!(s.rate, 500.0);
        assert_eq!(s.method, Method::POST);
        assert_eq!(s.headers["content-type"], "application/json");
        assert_eq!(s.body.as_deref(), Some("{}"));
    }
}
