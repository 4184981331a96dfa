//! The check behind "nothing leaves this machine" that a running MedText can
//! make about itself: every socket the process (and, for the app, its
//! webview's helper processes) holds is a Unix socket or a loopback one.
//!
//! Build-time checks prove the rest (`tests/network_zero.rs`: no HTTP,
//! updater, telemetry or crash-reporting crate in the app; the webview's
//! Content-Security-Policy allows nothing remote). This one answers the
//! question a security reviewer asks of the running program.
//!
//! Linux only: it reads `/proc`. Elsewhere it says it could not check.

use serde::Serialize;

/// What the check found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SocketReport {
    /// Processes looked at (this one and its descendants).
    pub processes: usize,
    /// Sockets they hold, of any kind.
    pub sockets: usize,
    /// Internet sockets whose both ends are on this machine (loopback).
    pub loopback: usize,
    /// Internet sockets bound or connected beyond loopback, as
    /// `tcp 10.0.0.5:443`: should always be empty.
    pub beyond_loopback: Vec<String>,
}

impl SocketReport {
    /// One sentence for `medtext doctor` and the status screen.
    pub fn statement(&self) -> String {
        if self.beyond_loopback.is_empty() {
            format!(
                "{} process(es) hold {} socket(s); none reaches beyond this machine ({} on loopback, the rest Unix or kernel sockets)",
                self.processes, self.sockets, self.loopback
            )
        } else {
            format!(
                "{} socket(s) reach beyond loopback: {}",
                self.beyond_loopback.len(),
                self.beyond_loopback.join(", ")
            )
        }
    }
}

/// Checks the sockets of this process and every process it started.
pub fn check_own_sockets() -> Result<SocketReport, String> {
    imp::check(std::process::id())
}

#[cfg(target_os = "linux")]
mod imp {
    use std::collections::{HashMap, HashSet};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::SocketReport;

    pub fn check(root: u32) -> Result<SocketReport, String> {
        let pids = process_tree(root);
        let mut inodes = HashSet::new();
        for pid in &pids {
            let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                continue;
            };
            for fd in fds.flatten() {
                if let Ok(target) = std::fs::read_link(fd.path()) {
                    let target = target.to_string_lossy();
                    if let Some(inode) = target
                        .strip_prefix("socket:[")
                        .and_then(|t| t.strip_suffix(']'))
                        .and_then(|t| t.parse::<u64>().ok())
                    {
                        inodes.insert(inode);
                    }
                }
            }
        }
        let mut table: HashMap<u64, (&'static str, IpAddr, u16, IpAddr, u16)> = HashMap::new();
        for (kind, file) in [
            ("tcp", "/proc/self/net/tcp"),
            ("tcp", "/proc/self/net/tcp6"),
            ("udp", "/proc/self/net/udp"),
            ("udp", "/proc/self/net/udp6"),
        ] {
            // A kernel without IPv6 has no tcp6/udp6: nothing to read there.
            let Ok(text) = std::fs::read_to_string(file) else {
                continue;
            };
            for line in text.lines().skip(1) {
                if let Some((inode, local, remote)) = parse_line(line) {
                    table.insert(inode, (kind, local.0, local.1, remote.0, remote.1));
                }
            }
        }
        let mut report = SocketReport {
            processes: pids.len(),
            sockets: inodes.len(),
            loopback: 0,
            beyond_loopback: Vec::new(),
        };
        for inode in &inodes {
            let Some(&(kind, local, local_port, remote, remote_port)) = table.get(inode) else {
                continue;
            };
            let remote_ok = remote.is_loopback() || (remote.is_unspecified() && remote_port == 0);
            if local.is_loopback() && remote_ok {
                report.loopback += 1;
            } else if remote.is_unspecified() {
                report
                    .beyond_loopback
                    .push(format!("{kind} listening on {local}:{local_port}"));
            } else {
                report
                    .beyond_loopback
                    .push(format!("{kind} to {remote}:{remote_port}"));
            }
        }
        report.beyond_loopback.sort();
        Ok(report)
    }

    /// `root` and its descendants, from the parent ids in `/proc/*/stat`.
    fn process_tree(root: u32) -> Vec<u32> {
        let mut parent_of = Vec::new();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                    continue;
                };
                // The command name (field 2) may hold spaces and ')': the
                // parent id is the second field after the last ')'.
                if let Some(ppid) = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    .and_then(|p| p.parse::<u32>().ok())
                {
                    parent_of.push((pid, ppid));
                }
            }
        }
        let mut tree = vec![root];
        let mut i = 0;
        while i < tree.len() {
            let parent = tree[i];
            tree.extend(
                parent_of
                    .iter()
                    .filter(|&&(pid, ppid)| ppid == parent && pid != parent)
                    .map(|&(pid, _)| pid),
            );
            i += 1;
        }
        tree
    }

    type Endpoint = (IpAddr, u16);

    /// One row of `/proc/net/{tcp,udp}{,6}`: the socket's inode and ends.
    fn parse_line(line: &str) -> Option<(u64, Endpoint, Endpoint)> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local = endpoint(fields.get(1)?)?;
        let remote = endpoint(fields.get(2)?)?;
        let inode = fields.get(9)?.parse().ok()?;
        Some((inode, local, remote))
    }

    /// `0100007F:1F90` → 127.0.0.1:8080. The kernel prints each 32-bit word
    /// of the address as a native-endian number.
    fn endpoint(text: &str) -> Option<Endpoint> {
        let (addr, port) = text.split_once(':')?;
        let port = u16::from_str_radix(port, 16).ok()?;
        let words: Vec<[u8; 4]> = (0..addr.len() / 8)
            .map(|i| {
                u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16)
                    .ok()
                    .map(u32::to_ne_bytes)
            })
            .collect::<Option<_>>()?;
        let bytes: Vec<u8> = words.concat();
        let ip = match bytes.len() {
            4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
            16 => {
                let v6 = Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?);
                // A v4 address in a v6 socket (::ffff:127.0.0.1).
                v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
            }
            _ => return None,
        };
        Some((ip, port))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn kernel_rows_are_read_into_addresses() {
            let v4 = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0";
            let (inode, local, remote) = parse_line(v4).unwrap();
            assert_eq!(inode, 12345);
            assert_eq!(local, ("127.0.0.1".parse().unwrap(), 8080));
            assert_eq!(remote, ("0.0.0.0".parse().unwrap(), 0));
            let v6 = "   1: 00000000000000000000000001000000:0050 0000000000000000FFFF00000500000A:01BB 01 00000000:00000000 00:00000000 00000000     0        0 777 1";
            let (_, local, remote) = parse_line(v6).unwrap();
            assert_eq!(local, ("::1".parse().unwrap(), 80));
            assert_eq!(remote, ("10.0.0.5".parse().unwrap(), 443));
        }

        #[test]
        fn a_socket_open_beyond_loopback_is_reported() {
            // Bound to every interface: reachable from other machines.
            let udp = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            let port = udp.local_addr().unwrap().port();
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let report = check(std::process::id()).unwrap();
            assert!(report.loopback >= 1, "{report:?}");
            assert!(
                report
                    .beyond_loopback
                    .contains(&format!("udp listening on 0.0.0.0:{port}")),
                "{report:?}"
            );
            drop((udp, listener));
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    pub fn check(_root: u32) -> Result<super::SocketReport, String> {
        Err("the socket check reads /proc and runs on Linux only".into())
    }
}
