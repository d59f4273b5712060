//! Linux capabilities by name, and cagette's default set.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

macro_rules! caps {
    ($($name:ident = $num:expr),* $(,)?) => {
        /// A Linux capability. Serialized as its kernel name (`"CAP_NET_RAW"`); parsing also
        /// accepts the name without `CAP_` and in lower case (`"net_raw"`).
        ///
        /// ```
        /// use cagette::Capability;
        /// assert_eq!("net_raw".parse::<Capability>().unwrap(), Capability::CAP_NET_RAW);
        /// assert_eq!(Capability::CAP_SYS_ADMIN.number(), 21);
        /// ```
        #[allow(non_camel_case_types, missing_docs)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum Capability { $($name),* }

        impl Capability {
            /// Every capability this version of cagette knows.
            pub const ALL: &'static [Capability] = &[$(Capability::$name),*];
            /// The kernel's number for this capability.
            pub fn number(self) -> u32 { match self { $(Capability::$name => $num),* } }
            /// The kernel's name, e.g. `CAP_CHOWN`.
            pub fn name(self) -> &'static str { match self { $(Capability::$name => stringify!($name)),* } }
        }
    };
}

caps! {
    CAP_CHOWN = 0, CAP_DAC_OVERRIDE = 1, CAP_DAC_READ_SEARCH = 2, CAP_FOWNER = 3, CAP_FSETID = 4,
    CAP_KILL = 5, CAP_SETGID = 6, CAP_SETUID = 7, CAP_SETPCAP = 8, CAP_LINUX_IMMUTABLE = 9,
    CAP_NET_BIND_SERVICE = 10, CAP_NET_BROADCAST = 11, CAP_NET_ADMIN = 12, CAP_NET_RAW = 13,
    CAP_IPC_LOCK = 14, CAP_IPC_OWNER = 15, CAP_SYS_MODULE = 16, CAP_SYS_RAWIO = 17,
    CAP_SYS_CHROOT = 18, CAP_SYS_PTRACE = 19, CAP_SYS_PACCT = 20, CAP_SYS_ADMIN = 21,
    CAP_SYS_BOOT = 22, CAP_SYS_NICE = 23, CAP_SYS_RESOURCE = 24, CAP_SYS_TIME = 25,
    CAP_SYS_TTY_CONFIG = 26, CAP_MKNOD = 27, CAP_LEASE = 28, CAP_AUDIT_WRITE = 29,
    CAP_AUDIT_CONTROL = 30, CAP_SETFCAP = 31, CAP_MAC_OVERRIDE = 32, CAP_MAC_ADMIN = 33,
    CAP_SYSLOG = 34, CAP_WAKE_ALARM = 35, CAP_BLOCK_SUSPEND = 36, CAP_AUDIT_READ = 37,
    CAP_PERFMON = 38, CAP_BPF = 39, CAP_CHECKPOINT_RESTORE = 40,
}

/// The capabilities a payload keeps by default: Docker's default set. Everything else is removed
/// from the bounding, permitted, effective and inheritable sets; the ambient set is cleared.
///
/// These are capabilities *inside the sandbox's user namespace*: they grant nothing over the host's
/// resources. A payload running as a non-zero uid loses them at exec, as usual.
pub const DEFAULT_CAPABILITIES: &[Capability] = &[
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// An unknown capability name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown capability {0:?}: expected a name such as CAP_NET_RAW or net_raw")]
pub struct UnknownCapability(pub String);

impl FromStr for Capability {
    type Err = UnknownCapability;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let up = s.trim().to_ascii_uppercase();
        let full = if up.starts_with("CAP_") { up } else { format!("CAP_{up}") };
        Capability::ALL
            .iter()
            .copied()
            .find(|c| c.name() == full)
            .ok_or_else(|| UnknownCapability(s.to_string()))
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of capabilities as the kernel's 64-bit mask.
pub(crate) fn mask<'a>(caps: impl IntoIterator<Item = &'a Capability>) -> u64 {
    caps.into_iter().fold(0u64, |m, c| m | (1u64 << c.number()))
}
