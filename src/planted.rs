//! Planted bugs (tests only): with the `planted-bugs` feature, the protocol
//! misbehaves in the one way the environment variable `UUIDLOCK_PLANT`
//! names, so that the simulator's tests can prove they catch it. Without the
//! feature, [`planted`] is a constant `false` and every planted branch
//! compiles away. Never enabled in a shipped build.
//!
//! The bugs: `skip-readback`, `break-without-claim`, `renew-by-rewrite`,
//! `release-without-claim`, `fence-before-publish`, and for shared modes
//! `writer-ignores-readers`, `slots-unbounded` (each described where it is
//! planted).

/// Whether `UUIDLOCK_PLANT` (read once per process) names `bug`.
#[cfg(feature = "planted-bugs")]
pub fn planted(bug: &str) -> bool {
    static PLANT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    PLANT.get_or_init(|| std::env::var("UUIDLOCK_PLANT").ok()).as_deref() == Some(bug)
}

/// Never: no bug is planted without the `planted-bugs` feature.
#[cfg(not(feature = "planted-bugs"))]
#[inline(always)]
pub const fn planted(_bug: &str) -> bool {
    false
}
