//! Resident memory of a process as Linux reports it (`VmRSS` in `/proc/<pid>/status`), and a
//! background sampler that keeps the peak of a process's RSS while it runs.
//!
//! The peak is what was seen every [`SAMPLE_EVERY`], so a spike shorter than that can be
//! missed: the figure is a lower bound of the true peak, close to it for a job whose memory
//! grows with its state and its batches rather than in short bursts.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often [`RssSampler`] reads `/proc/<pid>/status`.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// The `VmRSS` line of a `/proc/<pid>/status` text, in bytes; `None` without one.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    let unit = match words.next() {
        Some("kB") | None => 1024,
        Some(_) => return None,
    };
    value.checked_mul(unit)
}

/// The resident memory of process `pid` now, in bytes; `None` when the process is gone (or a
/// zombie, which has no `VmRSS`) or there is no `/proc`.
pub fn vm_rss(pid: u32) -> Option<u64> {
    parse_vm_rss(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// Samples a process's RSS every [`SAMPLE_EVERY`] on a thread of its own until stopped (or the
/// process is gone) and keeps the peak.
#[derive(Debug)]
pub struct RssSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RssSampler {
    /// Starts sampling `pid`, with a first sample taken before returning.
    pub fn start(pid: u32) -> RssSampler {
        let peak = Arc::new(AtomicU64::new(vm_rss(pid).unwrap_or(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name(format!("rss-{pid}"))
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    match vm_rss(pid) {
                        Some(rss) => {
                            p.fetch_max(rss, Ordering::Relaxed);
                        }
                        // Gone, or a zombie: nothing more to see. Before its first sample
                        // (`sh` exec'ing the job) a process has a `VmRSS` already.
                        None => return,
                    }
                    std::thread::sleep(SAMPLE_EVERY);
                }
            })
            .ok();
        RssSampler { peak, stop, thread }
    }

    /// The highest RSS seen so far, in bytes; `None` if no sample was ever taken.
    pub fn peak(&self) -> Option<u64> {
        Some(self.peak.load(Ordering::Relaxed)).filter(|&p| p > 0)
    }

    /// Stops sampling; the peak.
    pub fn stop(&mut self) -> Option<u64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.peak()
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_rss_lines() {
        let status = "Name:\tiotflow\nVmPeak:\t  900 kB\nVmRSS:\t  123456 kB\nThreads:\t9\n";
        assert_eq!(parse_vm_rss(status), Some(123_456 * 1024));
        assert_eq!(parse_vm_rss("Name:\tzombie\nState:\tZ\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\tlots kB\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\t12 MB\n"), None);
    }

    #[test]
    fn samples_the_peak_of_this_process() {
        let me = std::process::id();
        let before = vm_rss(me).expect("this process has a VmRSS");
        let mut sampler = RssSampler::start(me);
        // 96 MiB, every page touched, held for several samples, then freed.
        let big = vec![1u8; 96 << 20];
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sampler.peak().unwrap_or(0) < before + (80 << 20) {
            assert!(
                std::time::Instant::now() < deadline,
                "peak {:?} never rose 80 MiB above {before}",
                sampler.peak()
            );
            std::thread::sleep(SAMPLE_EVERY);
        }
        std::hint::black_box(&big);
        drop(big);
        let peak = sampler.stop().expect("samples were taken");
        assert!(peak >= before + (80 << 20), "peak {peak}, before {before}");
        // Stopped: the peak no longer moves.
        assert_eq!(sampler.peak(), Some(peak));
        assert_eq!(vm_rss(u32::MAX), None);
    }
}
