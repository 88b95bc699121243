//! The C interface of `librados.so.2` and `librbd.so.1`, loaded at run time.
//!
//! diskshadow has no link-time dependency on Ceph: it builds and runs on machines without it,
//! and only an operation that needs a cluster loads the libraries. The declarations follow
//! `rados/librados.h` and `rbd/librbd.h` of Ceph 16 (librbd 1.16); every function used here
//! exists with this signature since Ceph 13.

use std::ffi::{c_char, c_int, c_void};

use libloading::Library;

pub type RadosT = *mut c_void;
pub type IoctxT = *mut c_void;
pub type ImageT = *mut c_void;

/// `librbd_progress_fn_t`: return non-zero to cancel.
pub type ProgressFn = unsafe extern "C" fn(offset: u64, total: u64, data: *mut c_void) -> c_int;
/// The `rbd_diff_iterate2` callback: one extent, `exists` false for a hole.
pub type DiffFn =
    unsafe extern "C" fn(offset: u64, length: usize, exists: c_int, data: *mut c_void) -> c_int;

/// `rbd_snap_info_t`.
#[repr(C)]
pub struct SnapInfo {
    pub id: u64,
    pub size: u64,
    pub name: *const c_char,
}

/// `rbd_group_image_info_t`.
#[repr(C)]
pub struct GroupImageInfo {
    pub name: *mut c_char,
    pub pool: i64,
    pub state: c_int,
}

/// `rbd_group_snap_info_t`.
#[repr(C)]
pub struct GroupSnapInfo {
    pub name: *mut c_char,
    pub state: c_int,
}

/// `rbd_snap_group_namespace_t`.
#[repr(C)]
pub struct SnapGroupNamespace {
    pub group_pool: i64,
    pub group_name: *mut c_char,
    pub group_snap_name: *mut c_char,
}

/// `SNAP_NAMESPACE_TYPE_GROUP` of `rbd_snap_namespace_type_t`.
pub const SNAP_NAMESPACE_TYPE_USER: c_int = 0;
pub const SNAP_NAMESPACE_TYPE_GROUP: c_int = 1;
pub const SNAP_NAMESPACE_TYPE_TRASH: c_int = 2;
/// `RBD_GROUP_SNAP_STATE_COMPLETE` of `rbd_group_snap_state_t`.
pub const GROUP_SNAP_STATE_COMPLETE: c_int = 1;

macro_rules! entry_points {
    ($table:ident { $($name:ident: fn($($argument:ty),*) $(-> $result:ty)?;)* }) => {
        /// The entry points used, resolved once when the libraries load.
        #[allow(non_snake_case)]
        pub struct $table {
            $(pub $name: unsafe extern "C" fn($($argument),*) $(-> $result)?,)*
        }

        impl $table {
            /// Resolves every entry point in `library`; the first missing one is the error.
            ///
            /// # Safety
            /// `library` must be the Ceph library whose C API the declarations above describe.
            pub unsafe fn resolve(library: &Library) -> Result<Self, String> {
                Ok(Self {
                    $($name: *library
                        .get::<unsafe extern "C" fn($($argument),*) $(-> $result)?>(
                            concat!(stringify!($name), "\0").as_bytes(),
                        )
                        .map_err(|error| format!("{}: {error}", stringify!($name)))?,)*
                })
            }
        }
    };
}

entry_points!(Rados {
    rados_create: fn(*mut RadosT, *const c_char) -> c_int;
    rados_conf_read_file: fn(RadosT, *const c_char) -> c_int;
    rados_conf_set: fn(RadosT, *const c_char, *const c_char) -> c_int;
    rados_connect: fn(RadosT) -> c_int;
    rados_shutdown: fn(RadosT);
    rados_pool_lookup: fn(RadosT, *const c_char) -> i64;
    rados_ioctx_create: fn(RadosT, *const c_char, *mut IoctxT) -> c_int;
    rados_ioctx_destroy: fn(IoctxT);
});

entry_points!(Rbd {
    rbd_list: fn(IoctxT, *mut c_char, *mut usize) -> c_int;
    rbd_create2: fn(IoctxT, *const c_char, u64, u64, *mut c_int) -> c_int;
    rbd_remove: fn(IoctxT, *const c_char) -> c_int;
    rbd_clone: fn(IoctxT, *const c_char, *const c_char, IoctxT, *const c_char, u64, *mut c_int) -> c_int;
    rbd_open: fn(IoctxT, *const c_char, *mut ImageT, *const c_char) -> c_int;
    rbd_open_read_only: fn(IoctxT, *const c_char, *mut ImageT, *const c_char) -> c_int;
    rbd_close: fn(ImageT) -> c_int;
    rbd_get_size: fn(ImageT, *mut u64) -> c_int;
    rbd_get_features: fn(ImageT, *mut u64) -> c_int;
    rbd_get_id: fn(ImageT, *mut c_char, usize) -> c_int;
    rbd_read: fn(ImageT, u64, usize, *mut c_char) -> isize;
    rbd_write: fn(ImageT, u64, usize, *const c_char) -> isize;
    rbd_flush: fn(ImageT) -> c_int;
    rbd_discard: fn(ImageT, u64, u64) -> c_int;
    rbd_write_zeroes: fn(ImageT, u64, usize, c_int, c_int) -> c_int;
    rbd_snap_create: fn(ImageT, *const c_char) -> c_int;
    rbd_snap_remove: fn(ImageT, *const c_char) -> c_int;
    rbd_snap_list: fn(ImageT, *mut SnapInfo, *mut c_int) -> c_int;
    rbd_snap_list_end: fn(*mut SnapInfo);
    rbd_snap_rollback_with_progress: fn(ImageT, *const c_char, ProgressFn, *mut c_void) -> c_int;
    rbd_snap_protect: fn(ImageT, *const c_char) -> c_int;
    rbd_snap_unprotect: fn(ImageT, *const c_char) -> c_int;
    rbd_snap_is_protected: fn(ImageT, *const c_char, *mut c_int) -> c_int;
    rbd_snap_set_by_id: fn(ImageT, u64) -> c_int;
    rbd_snap_get_namespace_type: fn(ImageT, u64, *mut c_int) -> c_int;
    rbd_snap_get_group_namespace: fn(ImageT, u64, *mut SnapGroupNamespace, usize) -> c_int;
    rbd_snap_group_namespace_cleanup: fn(*mut SnapGroupNamespace, usize) -> c_int;
    rbd_flatten_with_progress: fn(ImageT, ProgressFn, *mut c_void) -> c_int;
    rbd_diff_iterate2: fn(ImageT, *const c_char, u64, u64, u8, u8, DiffFn, *mut c_void) -> c_int;
    rbd_group_create: fn(IoctxT, *const c_char) -> c_int;
    rbd_group_remove: fn(IoctxT, *const c_char) -> c_int;
    rbd_group_list: fn(IoctxT, *mut c_char, *mut usize) -> c_int;
    rbd_group_image_add: fn(IoctxT, *const c_char, IoctxT, *const c_char) -> c_int;
    rbd_group_image_remove: fn(IoctxT, *const c_char, IoctxT, *const c_char) -> c_int;
    rbd_group_image_list: fn(IoctxT, *const c_char, *mut GroupImageInfo, usize, *mut usize) -> c_int;
    rbd_group_image_list_cleanup: fn(*mut GroupImageInfo, usize, usize) -> c_int;
    rbd_group_snap_create: fn(IoctxT, *const c_char, *const c_char) -> c_int;
    rbd_group_snap_remove: fn(IoctxT, *const c_char, *const c_char) -> c_int;
    rbd_group_snap_list: fn(IoctxT, *const c_char, *mut GroupSnapInfo, usize, *mut usize) -> c_int;
    rbd_group_snap_list_cleanup: fn(*mut GroupSnapInfo, usize, usize) -> c_int;
    rbd_group_snap_rollback_with_progress: fn(IoctxT, *const c_char, *const c_char, ProgressFn, *mut c_void) -> c_int;
});
