//! Bad input: mutation fuzzing of the policy file, the config file and the control
//! protocol. Every input gets a typed result — never a panic.

use std::panic::{catch_unwind, AssertUnwindSafe};

use termshare::config::Config;
use termshare::policy::Policy;
use termshare::protocol::parse_request;
use termshare_chaos::rng::Rng;

const POLICY: &str = include_str!("../../examples/policy.toml");
const CONFIG: &str = include_str!("../../examples/config.toml");
const LINES: &[&str] = &[
    r#"{"v":1,"id":1,"cmd":"share","terminal":"S","backend":"tty-share","ttl":"30m","grace":["5m"],"access":"read-only","as":"human:a"}"#,
    r#"{"v":1,"id":"x","cmd":"extend","share_id":"01a2106f-4512-7171-9414-32417e940f90","by":"5m"}"#,
    r#"{"v":1,"id":2,"cmd":"handoff_request","terminal":"S","to":"agent:b","reason":"r","backend":"tty-share"}"#,
    r#"{"v":1,"id":3,"cmd":"watch"}"#,
];
const TOKENS: &[&[u8]] = &[
    b"\"",
    b"[",
    b"]",
    b"{",
    b"}",
    b"=",
    b",",
    b"\n",
    b"\\u0000",
    b"\xff",
    b"-1",
    b"1e999",
    b"99999999999999999999",
    b"\"\"\"",
    b"[[rule]]",
    b"null",
    b"true",
    b"*",
    b"\t",
    b"#",
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..rng.between(1, 6) {
        let len = v.len().max(1) as u64;
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(len) as usize;
                v[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(len) as usize;
                let t = TOKENS[rng.below(TOKENS.len() as u64) as usize];
                let at = i.min(v.len());
                v.splice(at..at, t.iter().copied());
            }
            2 if v.len() > 2 => {
                let a = rng.below(len) as usize;
                let b = (a + rng.between(1, 40) as usize).min(v.len());
                v.drain(a..b);
            }
            3 if !v.is_empty() => {
                let a = rng.below(len) as usize;
                let b = (a + rng.between(1, 40) as usize).min(v.len());
                let dup: Vec<u8> = v[a..b].to_vec();
                v.splice(a..a, dup);
            }
            4 => v.truncate(rng.below(len) as usize),
            _ => v.push(rng.below(256) as u8),
        }
    }
    v
}

fn fuzz(name: &str, seeds: &[&[u8]], rounds: usize, parse: impl Fn(&[u8]) -> bool) {
    let mut rng = Rng::new(0x5eed);
    let (mut ok, mut err) = (0, 0);
    for i in 0..rounds {
        let seed = seeds[i % seeds.len()];
        let input = mutate(&mut rng, seed);
        match catch_unwind(AssertUnwindSafe(|| parse(&input))) {
            Ok(true) => ok += 1,
            Ok(false) => err += 1,
            Err(_) => panic!(
                "{name}: panicked on input {:?}",
                String::from_utf8_lossy(&input)
            ),
        }
    }
    eprintln!("{name}: {rounds} mutated inputs, {ok} accepted, {err} typed errors, 0 panics");
    assert!(
        err > rounds / 4,
        "{name}: the mutations hardly ever broke the input"
    );
}

#[test]
fn the_policy_parser_never_panics() {
    fuzz("policy", &[POLICY.as_bytes()], 20_000, |b| {
        Policy::parse(&String::from_utf8_lossy(b)).is_ok()
    });
}

#[test]
fn the_config_parser_never_panics() {
    fuzz("config", &[CONFIG.as_bytes()], 20_000, |b| {
        Config::parse(&String::from_utf8_lossy(b)).is_ok()
    });
}

#[test]
fn the_protocol_parser_never_panics() {
    let seeds: Vec<&[u8]> = LINES.iter().map(|l| l.as_bytes()).collect();
    fuzz("protocol", &seeds, 50_000, |b| parse_request(b).is_ok());
}
