//! The loopback interface, brought up inside a Nitro enclave. The enclave's kernel boots with
//! `lo` down and AWS's init leaves it so; the KMS forwarder listens on 127.0.0.1, and a connect
//! to a down loopback fails with "network unreachable". Bringing it up is one `RTM_NEWLINK`
//! request over rtnetlink (the kernel then gives it 127.0.0.1/8 itself).

use std::os::fd::AsRawFd as _;
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto, socket,
};

use crate::Error;

const RTM_NEWLINK: u16 = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const IFF_UP: u32 = 1;

/// Whether a TCP connection over 127.0.0.1 goes through (to a throw-away listener).
pub fn reachable() -> bool {
    let Ok(listener) = std::net::TcpListener::bind("127.0.0.1:0") else {
        return false;
    };
    listener.local_addr().is_ok_and(|address| {
        std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok()
    })
}

/// `nlmsghdr` + `ifinfomsg`: set `IFF_UP` on interface `index`, acknowledged.
fn request(index: u32) -> [u8; 32] {
    let mut m = [0u8; 32];
    m[0..4].copy_from_slice(&32u32.to_ne_bytes()); // nlmsg_len
    m[4..6].copy_from_slice(&RTM_NEWLINK.to_ne_bytes());
    m[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    m[8..12].copy_from_slice(&1u32.to_ne_bytes()); // sequence
    // ifinfomsg: family AF_UNSPEC, padding, type 0, then index, flags, change mask.
    m[20..24].copy_from_slice(&index.to_ne_bytes());
    m[24..28].copy_from_slice(&IFF_UP.to_ne_bytes());
    m[28..32].copy_from_slice(&IFF_UP.to_ne_bytes());
    m
}

/// Brings `lo` up unless 127.0.0.1 is already reachable, then checks that it is.
///
/// # Errors
/// [`Error::Provider`] when the request fails (no `CAP_NET_ADMIN`, say) or 127.0.0.1 stays
/// unreachable.
pub fn ensure_up() -> Result<(), Error> {
    if reachable() {
        return Ok(());
    }
    let fail = |why: &'static str| move |_| Error::Provider(why);
    let index = nix::net::if_::if_nametoindex("lo").map_err(fail("no loopback interface"))?;
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )
    .map_err(fail("cannot open an rtnetlink socket"))?;
    sendto(
        fd.as_raw_fd(),
        &request(index),
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .map_err(fail("cannot send the loopback request"))?;
    // The kernel answers synchronously: the acknowledgement is queued when sendto returns.
    let mut answer = [0u8; 256];
    let n = recv(fd.as_raw_fd(), &mut answer, MsgFlags::MSG_DONTWAIT)
        .map_err(fail("no answer to the loopback request"))?;
    let kind = answer.get(4..6).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let code = answer
        .get(16..20)
        .filter(|_| n >= 20)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    if kind != Some(NLMSG_ERROR) || code != Some(0) {
        return Err(Error::Provider(
            "the kernel refused to bring the loopback interface up",
        ));
    }
    if reachable() {
        Ok(())
    } else {
        Err(Error::Provider(
            "127.0.0.1 unreachable with the loopback interface up",
        ))
    }
}

#[cfg(test)]
mod tests {
    //! Runs this test binary again in a new network namespace (`unshare --user --net`), where
    //! the loopback interface is down as in an enclave.

    use std::process::Command;

    const CHILD: &str = "SIGNER_LOOPBACK_CHILD";

    fn in_new_namespace(bring_up: bool) -> bool {
        Command::new("unshare")
            .args(["--user", "--map-root-user", "--net"])
            .arg(std::env::current_exe().expect("test binary qed"))
            .args([
                "--exact",
                "loopback::tests::a_down_loopback_is_brought_up",
                "--test-threads=1",
            ])
            .env(CHILD, if bring_up { "up" } else { "as-is" })
            .output()
            .expect("unshare runs (util-linux)")
            .status
            .success()
    }

    #[test]
    fn a_down_loopback_is_brought_up() {
        match std::env::var(CHILD).as_deref() {
            Ok("up") => {
                super::ensure_up().expect("brought up");
                assert!(super::reachable());
            }
            Ok(_) => assert!(super::reachable(), "down in a new namespace: this fails"),
            Err(_) => {
                assert!(
                    !in_new_namespace(false),
                    "a new namespace starts with lo down"
                );
                assert!(in_new_namespace(true), "ensure_up brings it up");
                // Where it is up already, nothing is asked of the kernel.
                super::ensure_up().expect("the test machine's loopback is up");
            }
        }
    }
}
