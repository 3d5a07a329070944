//! The capabilities a step keeps: Docker's default set. Everything else,
//! CAP_SYS_ADMIN first, is dropped from the bounding set so that no setuid
//! binary can get it back.

use caps::Capability;

/// Docker's default capability set for containers and build steps.
pub const DEFAULT: [Capability; 14] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_KILL,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_NET_RAW,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_MKNOD,
    Capability::CAP_AUDIT_WRITE,
    Capability::CAP_SETFCAP,
];

/// Drops every capability outside [`DEFAULT`] from the bounding set (needs
/// CAP_SETPCAP, so call it before changing uid).
pub fn drop_bounding() -> Result<(), String> {
    let keep: caps::CapsHashSet = DEFAULT.into_iter().collect();
    for cap in caps::runtime::thread_all_supported() {
        if !keep.contains(&cap) {
            caps::drop(None, caps::CapSet::Bounding, cap)
                .map_err(|e| format!("dropping {cap} from the bounding set: {e}"))?;
        }
    }
    Ok(())
}

/// For a root step: permitted/effective = [`DEFAULT`], inheritable and
/// ambient empty.
pub fn set_root_caps() -> Result<(), String> {
    let keep: caps::CapsHashSet = DEFAULT.into_iter().collect();
    let none = caps::CapsHashSet::new();
    caps::set(None, caps::CapSet::Ambient, &none).ok();
    caps::set(None, caps::CapSet::Inheritable, &none)
        .map_err(|e| format!("clearing inheritable capabilities: {e}"))?;
    caps::set(None, caps::CapSet::Effective, &keep)
        .map_err(|e| format!("setting effective capabilities: {e}"))?;
    caps::set(None, caps::CapSet::Permitted, &keep)
        .map_err(|e| format!("setting permitted capabilities: {e}"))?;
    Ok(())
}
