//! Every benchmark binary, run for a few hundred requests against the test build: a benchmark
//! that stops working (a protocol change it missed, say) fails the suite instead of rotting until
//! the next measurement. Figures from these runs mean nothing (debug builds, tiny samples).
#![expect(
    clippy::unwrap_used,
    reason = "integration tests: a failed step fails the test, helpers included"
)]

use std::process::Command;

fn run(binary: &str, args: &[&str], expect: &str) {
    let mut command = Command::new(tests::bin_dir().join(binary));
    command.args(args);
    let stdout = succeed(&mut command);
    assert!(
        stdout.contains(expect),
        "{binary}: no {expect:?} in\n{stdout}"
    );
}

/// Runs `command` to its end and returns its stdout; fails the test if it fails.
fn succeed(command: &mut Command) -> String {
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{command:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn loadgen_against_the_bare_relay() {
    let args = [
        "--requests",
        "200",
        "--warmup",
        "20",
        "--concurrency",
        "1,4",
        "--rounds",
        "1",
    ];
    run("loadgen", &args, "throughput ratio");
}

#[test]
fn loadgen_with_a_second_build_in_rotating_rounds() {
    let bins = tests::bin_dir();
    let args = [
        "--requests",
        "60",
        "--warmup",
        "10",
        "--concurrency",
        "2",
        "--rounds",
        "3",
        "--compare-bins",
        bins.to_str().unwrap(),
    ];
    run("loadgen", &args, "| Sign (compare) | 2 |");
}

/// `bench/run-prior` with this build standing for both builds (an earlier one would take minutes
/// to compile): its rounds, the rows it reads from both load generators and the medians.
#[test]
fn run_prior_reads_both_load_generators() {
    let bins = tests::bin_dir();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/run-prior");
    let stdout = succeed(
        Command::new(script)
            .args(["HEAD", "2", "100", "10"])
            .env("PRIOR_BINS", &bins)
            .env("NOW_BINS", &bins),
    );
    for round in ["| 0 | now |", "| 1 | prior |"] {
        assert!(stdout.contains(round), "no round {round:?} in\n{stdout}");
    }
    assert!(
        stdout.contains("- signer now / signer before, median of 2 paired rounds: "),
        "no median in\n{stdout}"
    );
}

#[test]
fn ethereum() {
    let args = [
        "--requests",
        "60",
        "--warmup",
        "10",
        "--concurrency",
        "1",
        "--rounds",
        "1",
    ];
    run("ethereum", &args, "|");
}

#[test]
fn batch() {
    let args = [
        "--signatures",
        "256",
        "--warmup",
        "32",
        "--concurrency",
        "2",
        "--batches",
        "1,16",
        "--rounds",
        "1",
    ];
    run("batch", &args, "signatures/s ratio");
}

#[test]
fn bitcoin() {
    run("bitcoin", &["--requests", "60", "--rounds", "1"], "|");
}

#[test]
fn scale() {
    run("scale", &["--keys", "1000"], "|");
}

#[test]
fn derived_key_cache() {
    run("derived", &["--keys", "1000", "--samples", "50"], "|");
}

#[test]
fn nonce_cache() {
    run(
        "nonces",
        &["--nonces", "10000"],
        "bytes of resident memory per nonce",
    );
}

#[test]
fn fleet_over_postgresql() {
    let args = ["--requests", "100", "--warmup", "10", "--rounds", "1"];
    run("fleet", &args, "|");
}

#[test]
fn soak() {
    let args = [
        "--seconds",
        "4",
        "--rate",
        "100",
        "--sample-ms",
        "500",
        "--mixed-per-second",
        "8",
    ];
    run("soak", &args, "bounds held");
}
