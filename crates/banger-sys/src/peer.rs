//! Who is on the other end of a unix socket: SO_PEERCRED, read by the
//! kernel at connect time, so a peer cannot claim to be someone else.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

/// A connected peer's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// Its user id.
    pub uid: u32,
    /// Its group id.
    pub gid: u32,
    /// Its process id (0 when the kernel could not say).
    pub pid: i32,
}

/// The credentials of the process at the other end of `stream`.
pub fn credentials(stream: &UnixStream) -> std::io::Result<Peer> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    // 12 bytes: always fits.
    let mut len = libc::socklen_t::try_from(size_of::<libc::ucred>()).unwrap_or(12);
    // SAFETY: `cred` and `len` are valid for writes of the size passed, and
    // the descriptor is owned by `stream` for the whole call.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Peer {
        uid: cred.uid,
        gid: cred.gid,
        pid: cred.pid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_pair_names_this_process() {
        let (a, _b) = UnixStream::pair().unwrap();
        let peer = credentials(&a).unwrap();
        assert_eq!(peer.uid, crate::euid());
        assert_eq!(peer.pid, i32::try_from(std::process::id()).unwrap());
    }
}
