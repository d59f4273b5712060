//! What runs between clone and exec (design rule 1): the setup child ([`exec`]), on raw system
//! calls ([`sys`]), and the sandbox's init (`init.c`, built by build.rs), which forks the payload
//! and runs the payload's plan in it. No allocation, no locks, no formatting, no panics here.

pub(crate) mod exec;
pub(crate) mod sys;
