//! Passing file descriptors over the service socket (`SCM_RIGHTS`).
//!
//! A requester sends a `descriptor` frame with one descriptor attached to its bytes; the
//! service's reading side receives every descriptor that comes with the stream into a queue,
//! and the `descriptor` frame takes the oldest one for the request that follows it. So `volume
//! read|write` can hand the service the requester's own output or input file (or pipe), and
//! the service reads or writes it directly, with the requester's access to it.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// At most this many received descriptors wait for their frame; more are closed at once (a
/// requester sends one per request, so a longer queue means a confused or hostile peer).
const MAX_WAITING: usize = 4;

/// Room for this many descriptors in one message's control data.
const PER_MESSAGE: usize = 4;

/// A Unix stream whose reads also receive the descriptors sent with the bytes.
#[derive(Debug)]
pub(crate) struct DescriptorStream {
    stream: UnixStream,
    received: VecDeque<OwnedFd>,
}

impl DescriptorStream {
    pub(crate) fn new(stream: UnixStream) -> DescriptorStream {
        DescriptorStream {
            stream,
            received: VecDeque::new(),
        }
    }

    /// The oldest descriptor received and not yet taken.
    pub(crate) fn take_descriptor(&mut self) -> Option<OwnedFd> {
        self.received.pop_front()
    }
}

fn control_space() -> usize {
    // SAFETY: CMSG_SPACE only computes a size.
    unsafe { libc::CMSG_SPACE((PER_MESSAGE * std::mem::size_of::<RawFd>()) as u32) as usize }
}

impl Read for DescriptorStream {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        // u64 elements keep the control buffer aligned for `cmsghdr`.
        let mut control = vec![0u64; control_space().div_ceil(8)];
        let mut vector = libc::iovec {
            iov_base: buffer.as_mut_ptr().cast(),
            iov_len: buffer.len(),
        };
        // SAFETY: an all-zero msghdr is a valid empty header.
        let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
        message.msg_iov = &mut vector;
        message.msg_iovlen = 1;
        message.msg_control = control.as_mut_ptr().cast();
        message.msg_controllen = control.len() * 8;
        // SAFETY: the iovec and control buffer outlive the call and their lengths are right.
        let read = unsafe {
            libc::recvmsg(
                self.stream.as_raw_fd(),
                &mut message,
                libc::MSG_CMSG_CLOEXEC,
            )
        };
        if read < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: walking the control data recvmsg filled in, within msg_controllen.
        unsafe {
            let mut header = libc::CMSG_FIRSTHDR(&message);
            while !header.is_null() {
                if (*header).cmsg_level == libc::SOL_SOCKET
                    && (*header).cmsg_type == libc::SCM_RIGHTS
                {
                    let data = libc::CMSG_DATA(header).cast::<RawFd>();
                    let bytes = (*header).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    for index in 0..bytes / std::mem::size_of::<RawFd>() {
                        let descriptor = OwnedFd::from_raw_fd(data.add(index).read_unaligned());
                        if self.received.len() < MAX_WAITING {
                            self.received.push_back(descriptor);
                        }
                    }
                }
                header = libc::CMSG_NXTHDR(&message, header);
            }
        }
        Ok(read as usize)
    }
}

/// Sends `bytes` with `descriptor` attached to them (the rest, if the first message did not
/// take every byte, is written plainly).
pub(crate) fn send_with_descriptor(
    stream: &UnixStream,
    bytes: &[u8],
    descriptor: BorrowedFd<'_>,
) -> io::Result<()> {
    let mut control = vec![0u64; control_space().div_ceil(8)];
    let mut vector = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty header.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = &mut vector;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE only computes a size.
    message.msg_controllen =
        unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    // SAFETY: the control buffer holds one header with one descriptor (checked by its size).
    let sent = unsafe {
        let header = libc::CMSG_FIRSTHDR(&message);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
        libc::CMSG_DATA(header)
            .cast::<RawFd>()
            .write_unaligned(descriptor.as_raw_fd());
        loop {
            let sent = libc::sendmsg(stream.as_raw_fd(), &message, libc::MSG_NOSIGNAL);
            if sent >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                break sent;
            }
        }
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    io::Write::write_all(&mut &*stream, &bytes[sent as usize..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Seek, Write};

    #[test]
    fn a_descriptor_travels_with_its_bytes_and_stays_usable() {
        let (left, right) = UnixStream::pair().unwrap();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"passed").unwrap();
        send_with_descriptor(&left, b"one\n", std::os::fd::AsFd::as_fd(&file)).unwrap();
        (&left).write_all(b"two\n").unwrap();
        let mut reader = BufReader::new(DescriptorStream::new(right));
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, "one\n");
        let received = reader.get_mut().take_descriptor().expect("a descriptor");
        assert!(reader.get_mut().take_descriptor().is_none());
        let mut passed = std::fs::File::from(received);
        passed.rewind().unwrap();
        let mut content = String::new();
        passed.read_to_string(&mut content).unwrap();
        assert_eq!(content, "passed");
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, "two\n");
    }

    #[test]
    fn descriptors_beyond_the_queue_are_closed() {
        let (left, right) = UnixStream::pair().unwrap();
        let file = tempfile::tempfile().unwrap();
        for _ in 0..MAX_WAITING + 3 {
            send_with_descriptor(&left, b"x", std::os::fd::AsFd::as_fd(&file)).unwrap();
        }
        drop(left);
        let mut stream = DescriptorStream::new(right);
        let mut sink = Vec::new();
        stream.read_to_end(&mut sink).unwrap();
        assert_eq!(sink.len(), MAX_WAITING + 3);
        let mut kept = 0;
        while stream.take_descriptor().is_some() {
            kept += 1;
        }
        assert_eq!(kept, MAX_WAITING);
    }
}
