//! The version, git commit and build date of this build (stamped by
//! build.rs), shared by `medtext --version` and the app's About box so both
//! name a build the same way.
//!
//! The date is the commit's or `SOURCE_DATE_EPOCH`'s, never the clock's, so
//! two builds of one commit are the same bytes; "unknown" where neither git
//! nor `MEDTEXT_GIT_COMMIT` / `SOURCE_DATE_EPOCH` could say.

/// The MedText version (the workspace's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit built: 12 hex digits, `MEDTEXT_GIT_COMMIT` as given, or
/// "unknown".
pub const COMMIT: &str = env!("MEDTEXT_GIT_COMMIT");

/// The build date, `YYYY-MM-DD` (UTC), or "unknown".
pub const DATE: &str = env!("MEDTEXT_BUILD_DATE");

/// "0.1.0 (commit 0123456789ab, built 2026-12-07)": what `medtext -V`
/// prints after the name. A `concat!` here, where the stamps are literals,
/// so it stays a constant for clap.
pub const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("MEDTEXT_GIT_COMMIT"),
    ", built ",
    env!("MEDTEXT_BUILD_DATE"),
    ")"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_is_made_of_the_parts() {
        assert_eq!(
            VERSION_LINE,
            format!("{VERSION} (commit {COMMIT}, built {DATE})")
        );
        assert!(DATE == "unknown" || DATE.len() == 10, "{DATE}");
    }
}
