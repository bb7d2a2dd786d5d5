//! Steps as Slurm batch jobs, against a real single-node cluster started
//! by the tests (`common::slurm`); skipped, saying why, where none can run.

mod common;

use common::slurm;

#[test]
fn the_test_cluster_runs_a_batch_job() {
    let Some(c) = slurm::cluster() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("job.sh");
    std::fs::write(&script, "#!/bin/sh\necho job $SLURM_JOB_ID\nexit 7\n").expect("script");
    let out = c
        .tool("sbatch")
        .args(["--parsable", "--wait", "-o"])
        .arg(dir.path().join("out"))
        .arg(&script)
        .output()
        .expect("sbatch runs");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(c.job(&id).contains("ExitCode=7:0"), "{}", c.job(&id));
    let log = std::fs::read_to_string(dir.path().join("out")).expect("output");
    assert_eq!(log, format!("job {id}\n"));
}
