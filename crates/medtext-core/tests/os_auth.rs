//! Unlocking with the OS account's password, through the real PAM stack.
//!
//! Needs root (CI runs as root): the test creates a throwaway account with a
//! known password, checks the right and a wrong password against it, and
//! removes the account. Elsewhere it says it was skipped.

use std::io::Write;
use std::process::{Command, Stdio};

const USER: &str = "medtextpamtest";
const PASSWORD: &str = "Correct-Horse-41";

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> bool {
    let Ok(mut child) = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let _ = pipe.write_all(input.as_bytes());
    }
    child.wait().is_ok_and(|s| s.success())
}

#[cfg(target_os = "linux")]
#[test]
fn the_os_account_password_unlocks_and_nothing_else_does() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED: creating a test account needs root");
        return;
    }
    // A run that was killed may have left the account behind.
    run("userdel", &[USER], None);
    if !run(
        "useradd",
        &["--no-create-home", "--shell", "/usr/sbin/nologin", USER],
        None,
    ) {
        println!("SKIPPED: useradd is not available");
        return;
    }
    let set = run("chpasswd", &[], Some(&format!("{USER}:{PASSWORD}\n")));
    let right = medtext_core::machine::os_auth::verify(USER, PASSWORD);
    let wrong = medtext_core::machine::os_auth::verify(USER, "Correct-Horse-42");
    let empty = medtext_core::machine::os_auth::verify(USER, "");
    let nobody = medtext_core::machine::os_auth::verify("medtext-no-such-user", PASSWORD);
    run("userdel", &[USER], None);

    assert!(set, "chpasswd set the test password");
    right.expect("the account's password unlocks");
    for (what, outcome) in [
        ("a wrong password", wrong),
        ("an empty one", empty),
        ("an unknown user", nobody),
    ] {
        let message = outcome.expect_err(what).to_string();
        assert!(
            message.contains("not the password of this computer account"),
            "{what}: {message}"
        );
    }
    // The signed-in account is read from the user database.
    assert_eq!(
        medtext_core::machine::os_auth::current_user().unwrap(),
        "root"
    );
}
