//! The fault campaign (`bench/chaos.py`, issue 21) at a small size, so that CI runs the script
//! and the guarantee it checks: four rounds of a fresh event (some split into jobs) and
//! `POST /push` traffic over real replicas, live and dry-run, each round with one fault (a
//! SIGKILL, a replica frozen past its lease, Redis killed -9 and restarted from its AOF, the
//! database's connections terminated), every token read off the stand-in: none lost, repeats
//! within each fault's bound. The script runs this build's debug binaries; README "Never twice,
//! never lost" says how to run a longer campaign.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::faults::BIN;

const FAULTS: [&str; 4] = ["sigkill", "sigstop", "redis", "db"];

#[test]
fn a_small_fault_campaign_loses_no_token_and_repeats_none_beyond_each_fault_s_bound() {
    let bin_dir = Path::new(BIN).parent().expect("the notifier's directory");
    let stand_in = bin_dir.join("notifier-stand-in");
    assert!(
        stand_in.exists(),
        "notifier-stand-in is not built beside the notifier in {} (`cargo test --workspace` \
         builds it for the stand-in's own tests)",
        bin_dir.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("chaos.json");
    let output = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/chaos.py"))
        .args(["--rounds", "4", "--devices", "2000", "--seed", "21"])
        .args(["--faults", &FAULTS.join(","), "--round-timeout", "90"])
        .arg("--bin-dir")
        .arg(bin_dir)
        .arg("--json")
        .arg(&report)
        .output()
        .expect("python3 runs bench/chaos.py");
    let printed = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "bench/chaos.py failed:\n{printed}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let rounds = report["rounds"].as_array().expect("the rounds");
    let mut faults: Vec<&str> = rounds.iter().filter_map(|r| r["fault"].as_str()).collect();
    faults.sort_unstable();
    let mut wanted = FAULTS.to_vec();
    wanted.sort_unstable();
    assert_eq!(faults, wanted, "one round per fault:\n{printed}");
    for round in rounds {
        assert_eq!(round["lost"], 0, "{round}\n{printed}");
        assert!(
            round["repeats"].as_u64() <= round["bound"].as_u64(),
            "{round}\n{printed}"
        );
        assert!(round["tokens"].as_u64() > Some(0), "{round}");
    }
    assert_eq!(report["summary"]["failed_rounds"], 0, "{printed}");
}
