//! Unlocking with the OS account's password, when the machine policy says
//! `unlock = "os"`: the person at the keyboard proves they are the signed-in
//! user, as a screen locker does.
//!
//! Linux: PAM, service `medtext` (`packaging/pam.d/medtext`, installed with
//! the package, includes the system's `common-auth`; without it PAM uses
//! its `other` service). Called through a few lines of FFI rather than a
//! PAM crate, whose bindings are generated with libclang at build time.
//! Other systems say it is not available yet.

use crate::{Error, Result};

/// Whether this build can check the OS account's password at all (Linux,
/// through PAM). Elsewhere `unlock = "os"` cannot unlock, so the app must
/// not start locked on it.
pub const AVAILABLE: bool = cfg!(target_os = "linux");

/// The signed-in OS user's name (from the user database, not `$USER`,
/// which the user can set to anything).
pub fn current_user() -> Result<String> {
    imp::current_user()
}

/// Checks `password` for the OS account `user`; fails without saying
/// whether the user or the password was wrong.
pub fn verify(user: &str, password: &str) -> Result<()> {
    imp::verify(user, password)
}

fn refused() -> Error {
    Error::Unlock {
        problem: "that is not the password of this computer account".into(),
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use std::ffi::{c_char, c_int, c_void, CStr, CString};
    use std::ptr;

    use zeroize::Zeroize;

    use super::refused;
    use crate::{Error, Result};

    const SERVICE: &CStr = c"medtext";
    const PAM_SUCCESS: c_int = 0;
    const PAM_PROMPT_ECHO_OFF: c_int = 1;
    const PAM_PROMPT_ECHO_ON: c_int = 2;
    const PAM_BUF_ERR: c_int = 5;
    const PAM_CONV_ERR: c_int = 19;
    const PAM_SILENT: c_int = 0x8000;
    const PAM_DISALLOW_NULL_AUTHTOK: c_int = 0x0001;

    #[repr(C)]
    struct PamMessage {
        msg_style: c_int,
        msg: *const c_char,
    }

    #[repr(C)]
    struct PamResponse {
        resp: *mut c_char,
        resp_retcode: c_int,
    }

    type Conversation = unsafe extern "C" fn(
        c_int,
        *mut *const PamMessage,
        *mut *mut PamResponse,
        *mut c_void,
    ) -> c_int;

    #[repr(C)]
    struct PamConv {
        conv: Option<Conversation>,
        appdata_ptr: *mut c_void,
    }

    #[link(name = "pam")]
    unsafe extern "C" {
        fn pam_start(
            service: *const c_char,
            user: *const c_char,
            conv: *const PamConv,
            handle: *mut *mut c_void,
        ) -> c_int;
        fn pam_authenticate(handle: *mut c_void, flags: c_int) -> c_int;
        fn pam_acct_mgmt(handle: *mut c_void, flags: c_int) -> c_int;
        fn pam_end(handle: *mut c_void, status: c_int) -> c_int;
    }

    /// What the conversation answers: the password to hidden prompts, the
    /// user name to visible ones.
    struct Answers {
        user: CString,
        password: CString,
    }

    /// PAM's callback. Every answer is a `malloc`ed copy: PAM frees them.
    unsafe extern "C" fn converse(
        count: c_int,
        messages: *mut *const PamMessage,
        responses: *mut *mut PamResponse,
        data: *mut c_void,
    ) -> c_int {
        let Ok(n) = usize::try_from(count) else {
            return PAM_CONV_ERR;
        };
        if n == 0 || messages.is_null() || responses.is_null() || data.is_null() {
            return PAM_CONV_ERR;
        }
        // SAFETY: PAM passes the `Answers` we gave pam_start, alive for
        // the whole call; `messages` holds `n` valid pointers (Linux-PAM's
        // layout); calloc'd memory is what PAM expects to free.
        unsafe {
            let answers = &*(data as *const Answers);
            let replies = libc::calloc(n, std::mem::size_of::<PamResponse>()) as *mut PamResponse;
            if replies.is_null() {
                return PAM_BUF_ERR;
            }
            for i in 0..n {
                let message = *messages.add(i);
                if message.is_null() {
                    continue;
                }
                let answer = match (*message).msg_style {
                    PAM_PROMPT_ECHO_OFF => Some(&answers.password),
                    PAM_PROMPT_ECHO_ON => Some(&answers.user),
                    _ => None,
                };
                if let Some(answer) = answer {
                    let copy = libc::strdup(answer.as_ptr());
                    if copy.is_null() {
                        free_replies(replies, i);
                        return PAM_BUF_ERR;
                    }
                    (*replies.add(i)).resp = copy;
                }
            }
            *responses = replies;
        }
        PAM_SUCCESS
    }

    /// Frees the first `filled` answers after a failure half-way.
    unsafe fn free_replies(replies: *mut PamResponse, filled: usize) {
        // SAFETY: the caller allocated `replies` with calloc and filled
        // `filled` entries with strdup'd strings (or null).
        unsafe {
            for i in 0..filled {
                let resp = (*replies.add(i)).resp;
                if !resp.is_null() {
                    libc::memset(resp as *mut c_void, 0, libc::strlen(resp));
                    libc::free(resp as *mut c_void);
                }
            }
            libc::free(replies as *mut c_void);
        }
    }

    pub fn verify(user: &str, password: &str) -> Result<()> {
        let user = CString::new(user).map_err(|_| refused())?;
        let password = CString::new(password).map_err(|_| refused())?;
        let mut answers = Box::new(Answers { user, password });
        let conversation = PamConv {
            conv: Some(converse),
            appdata_ptr: &mut *answers as *mut Answers as *mut c_void,
        };
        let mut handle: *mut c_void = ptr::null_mut();
        // SAFETY: every pointer is valid for the calls below: the strings
        // and `answers` outlive the handle, which pam_end releases.
        let outcome = unsafe {
            let started = pam_start(
                SERVICE.as_ptr(),
                answers.user.as_ptr(),
                &conversation,
                &mut handle,
            );
            if started != PAM_SUCCESS || handle.is_null() {
                Err(Error::Unlock {
                    problem: format!("the OS sign-in service (PAM) did not start (code {started})"),
                })
            } else {
                let flags = PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK;
                let mut status = pam_authenticate(handle, flags);
                if status == PAM_SUCCESS {
                    // An expired or locked account does not unlock either.
                    status = pam_acct_mgmt(handle, flags);
                }
                pam_end(handle, status);
                if status == PAM_SUCCESS {
                    Ok(())
                } else {
                    Err(refused())
                }
            }
        };
        let Answers { user, password } = *answers;
        let mut bytes = password.into_bytes();
        bytes.zeroize();
        drop(user);
        outcome
    }

    pub fn current_user() -> Result<String> {
        let mut buffer = vec![0 as c_char; 16 * 1024];
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = ptr::null_mut();
        // SAFETY: getpwuid_r writes into `entry` and `buffer`, both ours and
        // large enough (it reports ERANGE otherwise), and sets `found`.
        let code = unsafe {
            libc::getpwuid_r(
                libc::getuid(),
                &mut entry,
                buffer.as_mut_ptr(),
                buffer.len(),
                &mut found,
            )
        };
        if code != 0 || found.is_null() || entry.pw_name.is_null() {
            return Err(Error::Unlock {
                problem: "this process's OS account is not in the user database".into(),
            });
        }
        // SAFETY: on success pw_name points at a NUL-terminated string in `buffer`.
        let name = unsafe { CStr::from_ptr(entry.pw_name) };
        Ok(name.to_string_lossy().into_owned())
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use crate::{Error, Result};

    fn unavailable() -> Error {
        Error::Unlock {
            problem: "unlocking with the computer account's password is available on Linux only so far; ask IT to set `unlock = \"passphrase\"`".into(),
        }
    }

    pub fn verify(_user: &str, _password: &str) -> Result<()> {
        Err(unavailable())
    }

    pub fn current_user() -> Result<String> {
        Err(unavailable())
    }
}
