//! Drives plandeck's TUI in a pseudo-terminal for `bench/flood.sh`: opens a
//! plan, approves it, leaves the first step's log on screen (following its
//! tail) until the run has ended, then reports plandeck's peak RSS and
//! quits. Usage: `flood_tui PLANDECK PLAN DB`; prints `peak_rss_kb`.
//!
//! A benchmark driver only: it never judges what it measures.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portable_pty::{CommandBuilder, PtySize, native_pty_system};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, bin, plan, db] = args.as_slice() else {
        return Err("usage: flood_tui PLANDECK PLAN DB".into());
    };
    let (rows, cols) = (40, 120);
    let pair = native_pty_system().openpty(PtySize {
        rows,
        cols,
        pixel_width: 0,
        pixel_height: 0,
    })?;
    let mut cmd = CommandBuilder::new(bin);
    cmd.args([plan.as_str(), "--db", db.as_str()]);
    cmd.env("TERM", "xterm-256color");
    cmd.env("NO_COLOR", "1");
    cmd.cwd(std::env::current_dir()?);
    let mut child = pair.slave.spawn_command(cmd)?;
    drop(pair.slave);
    let pid = child.process_id().ok_or("no pid")?;
    let mut reader = pair.master.try_clone_reader()?;
    let mut writer = pair.master.take_writer()?;
    let screen = Arc::new(Mutex::new(vt100::Parser::new(
        std::num::NonZeroU16::new(rows).ok_or("rows")?,
        std::num::NonZeroU16::new(cols).ok_or("cols")?,
        0,
    )));
    let s = screen.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(mut p) = s.lock() {
                p.process(&buf[..n]);
            }
        }
    });
    let wait_for = |what: &str, secs: u64| -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let text = screen
                .lock()
                .map(|p| p.screen().contents())
                .unwrap_or_default();
            if text.contains(what) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("'{what}' not on screen after {secs} s:\n{text}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for("Review", 30)?;
    writer.write_all(b"a")?;
    writer.flush()?;
    wait_for("· follow", 30)?;
    wait_for("run succeeded", 600)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or("no VmHWM")?;
    writer.write_all(b"q")?;
    writer.flush()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            child.kill()?;
            return Err("plandeck did not quit".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("{hwm}");
    Ok(())
}
