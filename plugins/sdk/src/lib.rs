//! The wagate plugin SDK: the C ABI between the gateway and its plugins, and the Rust side of it.
//!
//! A plugin is a shared library (`crate-type = ["cdylib"]`) that the gateway loads at start with
//! `libloading` and never unloads. The gateway hands every event to every plugin as the JSON
//! envelope `{"id","type","tenant","device_id","seq","occurred_at","data"}`. Both sides compile
//! against this crate: the host reads the types and constants, a Rust plugin implements
//! [`Plugin`] and calls [`export_plugin!`].
//!
//! # The ABI
//!
//! - The library exports one symbol, [`ENTRY_SYMBOL`] (`wagate_plugin_entry`), of type
//!   [`EntryFn`]. It returns a pointer to a `'static` [`PluginVTable`].
//! - Every vtable and [`HostApi`] starts with `abi_version: u32`, and that field stays first in
//!   every future version: the host reads it (see [`check_vtable`]) before it trusts the rest of
//!   the layout, and refuses a plugin whose version is not [`ABI_VERSION`].
//! - Data crosses as [`Bytes`] (pointer + length), borrowed: valid only during the call that
//!   receives it. Config and events are UTF-8 JSON text.
//! - Statuses cross as a plain `u32` ([`Status`] values); the host maps unknown values to
//!   [`Status::Failed`] with [`Status::from_raw`]. Log levels cross as `u32` too ([`LogLevel`]).
//! - Error messages come back in an [`ErrorBuf`] the host owns and the plugin fills: no memory
//!   allocated by one side is ever freed by the other, so a plugin may use another allocator or
//!   another Rust version than the host.
//!
//! # Lifetimes and threading
//!
//! - The host calls `init` once. It then calls `on_event` from one thread at a time (its
//!   dedicated thread for that plugin), never concurrently with another `on_event`, `init` or
//!   `destroy`. `init` may run on a different thread than `on_event`, so a plugin is [`Send`].
//! - The host calls `destroy` at most once, after the last `on_event` returned. Plugins are never
//!   unloaded while running, so `destroy` may only come at process end, or never: do not rely on
//!   `Drop` to flush important state.
//! - The [`HostApi`] stays valid, at the same address, from `init` until `destroy` returns (or
//!   forever), and its `log` may be called from any thread the plugin starts.
//!
//! # Panics
//!
//! A panic must never unwind across the C boundary. The functions [`export_plugin!`] exports wrap
//! every call into the plugin in [`std::panic::catch_unwind`]: a panic becomes
//! [`Status::Panicked`] with the panic message in the [`ErrorBuf`], and the instance stays
//! usable (the host decides whether to keep sending events). This needs the default
//! `panic = "unwind"`; a plugin built with `panic = "abort"` takes the whole gateway down when it
//! panics.
//!
//! # Example
//!
//! ```standalone_crate
//! use wagate_plugin::{Host, Plugin, export_plugin};
//!
//! struct Counter {
//!     host: Host,
//!     seen: u64,
//! }
//!
//! impl Plugin for Counter {
//!     fn init(config: &str, host: Host) -> Result<Self, String> {
//!         host.info(&format!("counter starting with config {config}"));
//!         Ok(Counter { host, seen: 0 })
//!     }
//!
//!     fn on_event(&mut self, event: &str) -> Result<(), String> {
//!         self.seen += 1;
//!         self.host.debug(&format!("event #{}: {event}", self.seen));
//!         Ok(())
//!     }
//! }
//!
//! export_plugin!(Counter, name = "counter", version = "0.1.0");
//! # fn main() {
//! #     let vtable = unsafe { wagate_plugin::check_vtable(wagate_plugin_entry()) }.unwrap();
//! #     assert_eq!(unsafe { vtable.name() }, "counter");
//! # }
//! ```
#![warn(missing_docs)]

use std::any::Any;
use std::borrow::Cow;
use std::ffi::c_void;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// The version of the ABI this crate describes. The host refuses plugins built for another one.
pub const ABI_VERSION: u32 = 1;

/// The one symbol a plugin exports, NUL-terminated for `libloading`; its type is [`EntryFn`].
pub const ENTRY_SYMBOL: &[u8] = b"wagate_plugin_entry\0";

/// The capacity of an [`ErrorBuf`], in bytes.
pub const ERROR_CAPACITY: usize = 512;

/// The type of [`ENTRY_SYMBOL`]: returns the plugin's `'static` vtable, never null for a plugin
/// made with [`export_plugin!`]. The host calls it once, before anything else.
pub type EntryFn = unsafe extern "C" fn() -> *const PluginVTable;

/// [`HostApi::log`]: `level` is a [`LogLevel`] as `u32`, `message` UTF-8 text borrowed for the
/// call.
pub type LogFn = unsafe extern "C" fn(context: *mut c_void, level: u32, message: Bytes);

/// [`PluginVTable::init`].
pub type InitFn = unsafe extern "C" fn(
    host: *const HostApi,
    config: Bytes,
    instance_out: *mut *mut c_void,
    error_out: *mut ErrorBuf,
) -> u32;

/// [`PluginVTable::on_event`].
pub type OnEventFn =
    unsafe extern "C" fn(instance: *mut c_void, event: Bytes, error_out: *mut ErrorBuf) -> u32;

/// [`PluginVTable::destroy`].
pub type DestroyFn = unsafe extern "C" fn(instance: *mut c_void);

/// Bytes borrowed across the boundary: valid only for the call that receives them, unless a
/// field says otherwise (the vtable's `name` and `version` are `'static`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Bytes {
    /// The first byte; may be null or dangling when `len` is 0.
    pub ptr: *const u8,
    /// The number of bytes.
    pub len: usize,
}

impl Bytes {
    /// No bytes.
    pub const EMPTY: Bytes = Bytes {
        ptr: std::ptr::null(),
        len: 0,
    };

    /// Borrows `bytes`; the result must not outlive them.
    pub const fn from_slice(bytes: &[u8]) -> Bytes {
        Bytes {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }

    /// Borrows a `'static` string, as the vtable's `name` and `version` do.
    pub const fn from_static_str(text: &'static str) -> Bytes {
        Bytes::from_slice(text.as_bytes())
    }

    /// Reads the bytes back; an empty slice when `len` is 0, whatever `ptr` is.
    ///
    /// # Safety
    ///
    /// When `len` is not 0, `ptr` must point to `len` initialised bytes that stay valid and
    /// unchanged for `'a`.
    pub unsafe fn as_slice<'a>(&self) -> &'a [u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: the caller guarantees `ptr` points to `len` bytes valid for 'a.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl<'a> From<&'a [u8]> for Bytes {
    fn from(bytes: &'a [u8]) -> Bytes {
        Bytes::from_slice(bytes)
    }
}

/// How a call into the plugin ended. It crosses the boundary as a `u32`: read it with
/// [`Status::from_raw`], which maps every unknown value to [`Status::Failed`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// The call succeeded; the [`ErrorBuf`] is empty.
    Ok = 0,
    /// The plugin refused or failed; the [`ErrorBuf`] says why.
    Failed = 1,
    /// The plugin panicked; the panic was caught and the [`ErrorBuf`] holds its message.
    Panicked = 2,
}

impl Status {
    /// The status a plugin returned; unknown values are [`Status::Failed`].
    pub const fn from_raw(raw: u32) -> Status {
        match raw {
            0 => Status::Ok,
            2 => Status::Panicked,
            _ => Status::Failed,
        }
    }

    /// The value that crosses the boundary.
    pub const fn as_raw(self) -> u32 {
        self as u32
    }
}

impl From<u32> for Status {
    fn from(raw: u32) -> Status {
        Status::from_raw(raw)
    }
}

impl From<Status> for u32 {
    fn from(status: Status) -> u32 {
        status.as_raw()
    }
}

/// The level of a message a plugin logs through the host, from most to least severe. It crosses
/// the boundary as a `u32`: read it with [`LogLevel::from_raw`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// Something failed.
    Error = 1,
    /// Something looks wrong.
    Warn = 2,
    /// Something worth knowing happened.
    Info = 3,
    /// Detail for debugging.
    Debug = 4,
}

impl LogLevel {
    /// The level a plugin passed, or `None` for an unknown value (the host picks a level for it).
    pub const fn from_raw(raw: u32) -> Option<LogLevel> {
        match raw {
            1 => Some(LogLevel::Error),
            2 => Some(LogLevel::Warn),
            3 => Some(LogLevel::Info),
            4 => Some(LogLevel::Debug),
            _ => None,
        }
    }

    /// The value that crosses the boundary.
    pub const fn as_raw(self) -> u32 {
        self as u32
    }

    /// `"error"`, `"warn"`, `"info"` or `"debug"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the host offers a plugin. The host owns it and `context`, and keeps both valid, at the
/// same address, from `init` until `destroy` returns (or forever).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HostApi {
    /// [`ABI_VERSION`] of the host; always the first field.
    pub abi_version: u32,
    /// Opaque to the plugin; passed back as the first argument of every callback.
    pub context: *mut c_void,
    /// Logs `message` (UTF-8, borrowed for the call) at `level` (a [`LogLevel`]). Thread-safe:
    /// callable from any thread, concurrently. Must not unwind.
    pub log: LogFn,
}

/// A fixed buffer the host owns and a failing plugin fills with a UTF-8 message, truncated on a
/// character boundary to [`ERROR_CAPACITY`] bytes. Nothing is allocated across the boundary.
#[repr(C)]
#[derive(Clone)]
pub struct ErrorBuf {
    /// The message; only the first `len` bytes mean anything.
    pub buf: [u8; ERROR_CAPACITY],
    /// The length of the message; the host clamps it to [`ERROR_CAPACITY`].
    pub len: usize,
}

impl ErrorBuf {
    /// An empty buffer.
    pub const fn new() -> ErrorBuf {
        ErrorBuf {
            buf: [0; ERROR_CAPACITY],
            len: 0,
        }
    }

    /// Empties the buffer.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Replaces the message with `message`, cut at the last character boundary that fits.
    pub fn set(&mut self, message: &str) {
        let len = message.floor_char_boundary(ERROR_CAPACITY);
        self.buf[..len].copy_from_slice(&message.as_bytes()[..len]);
        self.len = len;
    }

    /// The message bytes, with `len` clamped to the capacity.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len.min(ERROR_CAPACITY)]
    }

    /// The message; invalid UTF-8 from a foreign plugin is replaced, never trusted.
    pub fn message(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(self.as_bytes())
    }
}

impl Default for ErrorBuf {
    fn default() -> ErrorBuf {
        ErrorBuf::new()
    }
}

impl fmt::Debug for ErrorBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ErrorBuf").field(&self.message()).finish()
    }
}

/// What a plugin exports through [`ENTRY_SYMBOL`]. Every function pointer is non-null. Calls
/// follow the threading rule of the crate docs: `init` once, then `on_event` from one thread at
/// a time, then `destroy` at most once.
#[repr(C)]
#[derive(Debug)]
pub struct PluginVTable {
    /// [`ABI_VERSION`] of the plugin; always the first field.
    pub abi_version: u32,
    /// The plugin's name: `'static`, UTF-8.
    pub name: Bytes,
    /// The plugin's version: `'static`, UTF-8.
    pub version: Bytes,
    /// Creates the instance. `host` is valid until `destroy` returns; `config` is the plugin's
    /// JSON config (`{}` when none), borrowed for the call. On [`Status::Ok`] it stores the
    /// instance (opaque, non-null) in `*instance_out`; otherwise it stores null there and a
    /// message in `*error_out`. Returns a [`Status`] as `u32`.
    pub init: InitFn,
    /// Handles one event: `event` is the JSON envelope, borrowed for the call. On failure it
    /// writes a message in `*error_out`. Returns a [`Status`] as `u32`.
    pub on_event: OnEventFn,
    /// Drops the instance `init` produced; never called twice, nor with any other call running.
    pub destroy: DestroyFn,
}

// SAFETY: a vtable is never written after it is built: `name` and `version` point into immutable
// `'static` strings and the rest are plain integers and function pointers, so sharing `&PluginVTable`
// between threads cannot race. The functions it points to carry their own threading contract.
unsafe impl Sync for PluginVTable {}

impl PluginVTable {
    /// The plugin's name; invalid UTF-8 is replaced.
    ///
    /// # Safety
    ///
    /// `name` must point to `'static` bytes (true for a vtable that [`check_vtable`] accepted,
    /// as long as its library stays loaded).
    pub unsafe fn name(&self) -> Cow<'static, str> {
        // SAFETY: guaranteed by the caller.
        String::from_utf8_lossy(unsafe { self.name.as_slice() })
    }

    /// The plugin's version; invalid UTF-8 is replaced.
    ///
    /// # Safety
    ///
    /// As for [`PluginVTable::name`].
    pub unsafe fn version(&self) -> Cow<'static, str> {
        // SAFETY: guaranteed by the caller.
        String::from_utf8_lossy(unsafe { self.version.as_slice() })
    }
}

/// Why the host refuses what a plugin's entry point returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VTableError {
    /// The entry point returned null.
    Null,
    /// The plugin was built for another ABI version.
    AbiMismatch {
        /// [`ABI_VERSION`] of this host.
        host: u32,
        /// The version the plugin declares.
        plugin: u32,
    },
}

impl fmt::Display for VTableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VTableError::Null => f.write_str("the plugin's entry point returned a null vtable"),
            VTableError::AbiMismatch { host, plugin } => write!(
                f,
                "the plugin speaks wagate plugin ABI version {plugin} but this gateway speaks \
                 version {host}: rebuild the plugin against a matching wagate-plugin"
            ),
        }
    }
}

impl std::error::Error for VTableError {}

/// The host's check of what [`EntryFn`] returned: non-null, and built for [`ABI_VERSION`]. Only
/// the leading `abi_version` is read before the version is known to match.
///
/// # Safety
///
/// `ptr` must be null or point to a vtable whose first field is a `u32` ABI version and which,
/// when that version is [`ABI_VERSION`], is a valid [`PluginVTable`]. The library it came from
/// must stay loaded for the rest of the process (wagate never unloads plugins).
pub unsafe fn check_vtable(ptr: *const PluginVTable) -> Result<&'static PluginVTable, VTableError> {
    if ptr.is_null() {
        return Err(VTableError::Null);
    }
    // SAFETY: non-null, and the caller guarantees a leading u32 version; `abi_version` is the
    // first field of a repr(C) struct, so it sits at offset 0.
    let plugin = unsafe { ptr.cast::<u32>().read() };
    if plugin != ABI_VERSION {
        return Err(VTableError::AbiMismatch {
            host: ABI_VERSION,
            plugin,
        });
    }
    // SAFETY: the version matches, so the caller guarantees a valid, never-unloaded vtable.
    Ok(unsafe { &*ptr })
}

/// The plugin's safe handle on the [`HostApi`]: cheap to copy, usable from any thread.
#[derive(Clone, Copy)]
pub struct Host {
    api: *const HostApi,
}

// SAFETY: `Host` only reads the `HostApi` and calls its `log`. The host guarantees that the
// `HostApi` outlives the plugin (it stays valid until `destroy` returns, and plugins are never
// unloaded) and that `log` is thread-safe, so the pointer may be sent to and shared between
// threads.
unsafe impl Send for Host {}
// SAFETY: as for `Send`.
unsafe impl Sync for Host {}

impl Host {
    /// Wraps the host's `HostApi`; `None` when `api` is null.
    ///
    /// # Safety
    ///
    /// `api` must be null or point to a `HostApi` that stays valid for as long as the `Host` and
    /// its copies are used, and whose `log` is thread-safe.
    pub unsafe fn from_raw(api: *const HostApi) -> Option<Host> {
        (!api.is_null()).then_some(Host { api })
    }

    /// A host that discards every message: for testing a [`Plugin`] without a gateway.
    pub fn discard() -> Host {
        struct Static(HostApi);
        // SAFETY: the static is immutable, its context is null and its `log` does nothing.
        unsafe impl Sync for Static {}
        unsafe extern "C" fn discard(_: *mut c_void, _: u32, _: Bytes) {}
        static DISCARD: Static = Static(HostApi {
            abi_version: ABI_VERSION,
            context: std::ptr::null_mut(),
            log: discard,
        });
        Host { api: &DISCARD.0 }
    }

    /// Logs `message` at `level` through the gateway.
    pub fn log(&self, level: LogLevel, message: &str) {
        // SAFETY: `api` is valid for the plugin's life (see `from_raw`), `message` outlives the
        // call, and the host's `log` is thread-safe.
        unsafe {
            let api = &*self.api;
            (api.log)(
                api.context,
                level.as_raw(),
                Bytes::from_slice(message.as_bytes()),
            );
        }
    }

    /// Logs at [`LogLevel::Error`].
    pub fn error(&self, message: &str) {
        self.log(LogLevel::Error, message);
    }

    /// Logs at [`LogLevel::Warn`].
    pub fn warn(&self, message: &str) {
        self.log(LogLevel::Warn, message);
    }

    /// Logs at [`LogLevel::Info`].
    pub fn info(&self, message: &str) {
        self.log(LogLevel::Info, message);
    }

    /// Logs at [`LogLevel::Debug`].
    pub fn debug(&self, message: &str) {
        self.log(LogLevel::Debug, message);
    }
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host").field("api", &self.api).finish()
    }
}

/// A plugin, written in safe Rust; [`export_plugin!`] turns it into the C entry points.
///
/// Returning `Err(message)` answers [`Status::Failed`] with `message` (cut to
/// [`ERROR_CAPACITY`] bytes); a panic answers [`Status::Panicked`]. Config and events are UTF-8
/// JSON text: input that is not UTF-8 is answered with [`Status::Failed`] before the plugin sees
/// it.
pub trait Plugin: Send + 'static {
    /// Creates the plugin from its JSON config (`{}` when it has none). `host` stays usable for
    /// the plugin's whole life, from any thread.
    fn init(config: &str, host: Host) -> Result<Self, String>
    where
        Self: Sized;

    /// Handles one event, a JSON envelope
    /// `{"id","type","tenant","device_id","seq","occurred_at","data"}`. Events of one device
    /// arrive in `seq` order; calls never overlap.
    fn on_event(&mut self, event: &str) -> Result<(), String>;
}

/// Exports a [`Plugin`] type as this library's [`ENTRY_SYMBOL`]. Use it once per library.
///
/// ```text
/// export_plugin!(MyPlugin);                                        // name and version from Cargo
/// export_plugin!(MyPlugin, name = "my-plugin", version = "1.2.0"); // or given: &'static str consts
/// ```
///
/// It exports `wagate_plugin_entry`, whose vtable points at this crate's panic-catching
/// trampolines for the type, so the macro itself stays a few lines.
///
/// ```standalone_crate
/// struct Quiet;
///
/// impl wagate_plugin::Plugin for Quiet {
///     fn init(_config: &str, _host: wagate_plugin::Host) -> Result<Self, String> {
///         Ok(Quiet)
///     }
///
///     fn on_event(&mut self, _event: &str) -> Result<(), String> {
///         Ok(())
///     }
/// }
///
/// wagate_plugin::export_plugin!(Quiet);
/// # fn main() {
/// #     let vtable = unsafe { wagate_plugin::check_vtable(wagate_plugin_entry()) }.unwrap();
/// #     assert_eq!(unsafe { vtable.name() }, env!("CARGO_PKG_NAME"));
/// #     assert_eq!(unsafe { vtable.version() }, env!("CARGO_PKG_VERSION"));
/// # }
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($ty:ty $(,)?) => {
        $crate::export_plugin!(
            $ty,
            name = ::core::env!("CARGO_PKG_NAME"),
            version = ::core::env!("CARGO_PKG_VERSION")
        );
    };
    ($ty:ty, name = $name:expr, version = $version:expr $(,)?) => {
        /// The wagate plugin entry point: returns this plugin's `'static` vtable.
        #[unsafe(no_mangle)]
        pub extern "C" fn wagate_plugin_entry() -> *const $crate::PluginVTable {
            static VTABLE: $crate::PluginVTable = $crate::__vtable::<$ty>($name, $version);
            &VTABLE
        }
    };
}

/// The vtable of `P`; what [`export_plugin!`] exports.
#[doc(hidden)]
pub const fn __vtable<P: Plugin>(name: &'static str, version: &'static str) -> PluginVTable {
    PluginVTable {
        abi_version: ABI_VERSION,
        name: Bytes::from_static_str(name),
        version: Bytes::from_static_str(version),
        init: __init::<P>,
        on_event: __on_event::<P>,
        destroy: __destroy::<P>,
    }
}

/// [`PluginVTable::init`] for `P`.
///
/// # Safety
///
/// The vtable contract: `host` null or valid until `destroy`, `config` valid for the call,
/// `instance_out` null or writable, `error_out` null or writable.
#[doc(hidden)]
pub unsafe extern "C" fn __init<P: Plugin>(
    host: *const HostApi,
    config: Bytes,
    instance_out: *mut *mut c_void,
    error_out: *mut ErrorBuf,
) -> u32 {
    // SAFETY: null or writable, per the contract.
    let error = unsafe { error_out.as_mut() };
    if instance_out.is_null() {
        return fail(error, Status::Failed, "init got a null instance_out");
    }
    // SAFETY: non-null and writable, per the contract.
    unsafe { instance_out.write(std::ptr::null_mut()) };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: null or valid until `destroy`, with a thread-safe `log`, per the contract.
        let host = unsafe { Host::from_raw(host) }.ok_or("init got a null host")?;
        // SAFETY: `from_raw` checked the pointer is not null.
        let host_version = unsafe { (*host.api).abi_version };
        if host_version != ABI_VERSION {
            return Err(format!(
                "the gateway speaks wagate plugin ABI version {host_version} but this plugin \
                 speaks version {ABI_VERSION}"
            ));
        }
        // SAFETY: valid for the call, per the contract.
        let config = std::str::from_utf8(unsafe { config.as_slice() })
            .map_err(|e| format!("the plugin config must be UTF-8 JSON: {e}"))?;
        P::init(config, host).map(|plugin| Box::into_raw(Box::new(plugin)).cast::<c_void>())
    }));
    match settle(outcome, error) {
        Ok(instance) => {
            // SAFETY: checked non-null above.
            unsafe { instance_out.write(instance) };
            Status::Ok.as_raw()
        }
        Err(status) => status.as_raw(),
    }
}

/// [`PluginVTable::on_event`] for `P`.
///
/// # Safety
///
/// The vtable contract: `instance` from a successful [`__init`] of the same `P`, not destroyed,
/// no other call on it running; `event` valid for the call; `error_out` null or writable.
#[doc(hidden)]
pub unsafe extern "C" fn __on_event<P: Plugin>(
    instance: *mut c_void,
    event: Bytes,
    error_out: *mut ErrorBuf,
) -> u32 {
    // SAFETY: null or writable, per the contract.
    let error = unsafe { error_out.as_mut() };
    if instance.is_null() {
        return fail(error, Status::Failed, "on_event got a null instance");
    }
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: valid for the call, per the contract.
        let event = std::str::from_utf8(unsafe { event.as_slice() })
            .map_err(|e| format!("the event must be UTF-8 JSON: {e}"))?;
        // SAFETY: a live `P` from `__init`, and no other call touches it meanwhile.
        let plugin = unsafe { &mut *instance.cast::<P>() };
        plugin.on_event(event)
    }));
    match settle(outcome, error) {
        Ok(()) => Status::Ok.as_raw(),
        Err(status) => status.as_raw(),
    }
}

/// [`PluginVTable::destroy`] for `P`; a panic while dropping is swallowed, as there is no one
/// left to tell.
///
/// # Safety
///
/// `instance` is null or from a successful [`__init`] of the same `P`, not yet destroyed, with
/// no other call on it running.
#[doc(hidden)]
pub unsafe extern "C" fn __destroy<P: Plugin>(instance: *mut c_void) {
    if instance.is_null() {
        return;
    }
    // SAFETY: the Box `__init` leaked, dropped once, per the contract.
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        drop(unsafe { Box::from_raw(instance.cast::<P>()) })
    }));
    if let Err(payload) = outcome {
        drop_payload(payload);
    }
}

/// Turns a caught call into its value, or into the status to return with `error` filled in.
fn settle<T>(
    outcome: std::thread::Result<Result<T, String>>,
    error: Option<&mut ErrorBuf>,
) -> Result<T, Status> {
    match outcome {
        Ok(Ok(value)) => {
            if let Some(error) = error {
                error.clear();
            }
            Ok(value)
        }
        Ok(Err(message)) => Err(fail(error, Status::Failed, &message)),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&'static str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("the plugin panicked with a payload that is not a string");
            let status = fail(error, Status::Panicked, message);
            drop_payload(payload);
            Err(status)
        }
    }
}

/// Writes `message` into `error` (when there is one) and returns `status`, as `T`.
fn fail<T: From<Status>>(error: Option<&mut ErrorBuf>, status: Status, message: &str) -> T {
    if let Some(error) = error {
        error.set(message);
    }
    T::from(status)
}

/// Drops a panic payload without letting a panicking `Drop` of it escape.
fn drop_payload(payload: Box<dyn Any + Send>) {
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}
