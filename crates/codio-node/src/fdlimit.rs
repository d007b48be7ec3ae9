//! The open-file limit, raised to the hard limit at start.
//!
//! Every TCP connection holds a socket, every listener one more, and transfers into the inbox
//! a file each: a node near `max_peers` with its pending connections can need hundreds of
//! descriptors, and the usual soft limit (1,024) is lower than the hard one a service is
//! given. Like kubo and go-libp2p's resource manager, the node raises its soft limit to the
//! hard limit once, at start, and logs both.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// The open-file limits before and after [`raise`] (`None`: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileLimits {
    /// The soft limit before.
    pub(crate) before: Option<u64>,
    /// The soft limit now.
    pub(crate) soft: Option<u64>,
    /// The hard limit.
    pub(crate) hard: Option<u64>,
}

/// Raises the soft open-file limit to the hard one.
///
/// # Errors
///
/// When the kernel refuses the new limit (the old one stays).
pub(crate) fn raise() -> std::io::Result<FileLimits> {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    if current != maximum {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: maximum,
                maximum,
            },
        )?;
    }
    Ok(FileLimits {
        before: current,
        soft: getrlimit(Resource::Nofile).current,
        hard: maximum,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let limits = raise().unwrap();
        assert_eq!(limits.soft, limits.hard);
        assert!(limits.before <= limits.soft || limits.soft.is_none());
        assert_eq!(
            raise().unwrap().before,
            limits.soft,
            "a second raise changes nothing"
        );
    }
}
