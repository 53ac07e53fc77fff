//! Loading one plugin: the shared library, its ABI version, its `init`. All the unsafe code of
//! the plugin host lives here, next to the reasons it is sound.

use std::ffi::c_void;
use std::path::{Path, PathBuf};

use wagate_plugin::{
    ABI_VERSION, Bytes, ENTRY_SYMBOL, EntryFn, ErrorBuf, HostApi, LogLevel, PluginVTable, Status,
    VTableError, check_vtable,
};

use super::PluginError;

/// What a plugin's log calls carry back: its name, for the log line.
struct LogContext {
    name: String,
}

/// The host's log callback: a plugin's message becomes a tracing event naming the plugin.
unsafe extern "C" fn log(context: *mut c_void, level: u32, message: Bytes) {
    // SAFETY: `context` is the leaked `LogContext` this module gave the plugin, alive forever;
    // `message` is valid for this call, as the ABI promises.
    let (context, message) = unsafe { (&*(context as *const LogContext), message.as_slice()) };
    let message = String::from_utf8_lossy(message);
    let plugin = context.name.as_str();
    match LogLevel::from_raw(level) {
        Some(LogLevel::Error) => tracing::error!(plugin, "{message}"),
        Some(LogLevel::Warn) => tracing::warn!(plugin, "{message}"),
        Some(LogLevel::Info) | None => tracing::info!(plugin, "{message}"),
        Some(LogLevel::Debug) => tracing::debug!(plugin, "{message}"),
    }
}

/// A loaded, initialised plugin. Its library is never unloaded, so the vtable and everything it
/// points to live as long as the process.
pub(crate) struct Loaded {
    pub vtable: &'static PluginVTable,
    pub name: String,
    pub version: String,
    pub path: PathBuf,
    instance: *mut c_void,
}

// SAFETY: the instance is created by `init` on the loading thread and from then on used by one
// thread only (the plugin's worker), which the ABI allows: plugins are `Send`.
unsafe impl Send for Loaded {}

impl Loaded {
    /// Hands one event to the plugin; the status and, unless it is `Ok`, its message.
    pub fn on_event(&mut self, event: &[u8], error: &mut ErrorBuf) -> Status {
        error.clear();
        // SAFETY: the vtable comes from a library that stays loaded; the instance is the one
        // `init` returned and only this thread uses it; `event` outlives the call.
        let raw = unsafe { (self.vtable.on_event)(self.instance, Bytes::from_slice(event), error) };
        Status::from_raw(raw)
    }

    /// Lets the plugin release its instance; called once, after its last event.
    pub fn destroy(self) {
        // SAFETY: as for `on_event`, and `self` is consumed, so no call follows.
        unsafe { (self.vtable.destroy)(self.instance) }
    }
}

/// Loads the plugin at `path` and initialises it with `config` (JSON text).
pub(crate) fn load(path: &Path, config: &str) -> Result<Loaded, PluginError> {
    let shown = path.to_path_buf();
    if !path.exists() {
        return Err(PluginError::NotFound(shown));
    }
    // SAFETY: loading a library runs its initialisers; a plugin is code the operator chose to
    // run in this process, exactly as the configuration names it.
    let library = unsafe { libloading::Library::new(path) }.map_err(|e| PluginError::Load {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    // Never unloaded: the vtable, names and code must outlive every thread that may call them.
    let library: &'static libloading::Library = Box::leak(Box::new(library));
    // SAFETY: the symbol's type is the ABI's entry function type.
    let entry = unsafe { library.get::<EntryFn>(ENTRY_SYMBOL) }
        .map_err(|_| PluginError::MissingSymbol(shown.clone()))?;
    // SAFETY: the entry function takes nothing and returns a pointer that `check_vtable`
    // checks before anything else is read.
    let vtable = unsafe { check_vtable(entry()) }.map_err(|e| match e {
        VTableError::AbiMismatch { host, plugin } => PluginError::AbiMismatch {
            path: shown.clone(),
            plugin,
            host,
        },
        VTableError::Null => PluginError::Load {
            path: shown.clone(),
            reason: "its entry function returned no vtable".to_string(),
        },
    })?;
    // SAFETY: the vtable is checked and 'static.
    let (name, version) = unsafe { (vtable.name().into_owned(), vtable.version().into_owned()) };
    let context: &'static LogContext = Box::leak(Box::new(LogContext { name: name.clone() }));
    let host: &'static HostApi = Box::leak(Box::new(HostApi {
        abi_version: ABI_VERSION,
        context: context as *const LogContext as *mut c_void,
        log,
    }));
    let mut instance = std::ptr::null_mut();
    let mut error = ErrorBuf::new();
    // SAFETY: `host` lives forever; `config` outlives the call; `instance` and `error` are
    // valid places for the plugin to write.
    let raw = unsafe {
        (vtable.init)(
            host,
            Bytes::from_slice(config.as_bytes()),
            &mut instance,
            &mut error,
        )
    };
    match Status::from_raw(raw) {
        Status::Ok if !instance.is_null() => Ok(Loaded {
            vtable,
            name,
            version,
            path: shown,
            instance,
        }),
        status => Err(PluginError::Init {
            path: shown,
            name,
            reason: match status {
                Status::Panicked => format!("it panicked: {}", error.message()),
                Status::Ok => "it returned no instance".to_string(),
                Status::Failed => error.message().into_owned(),
            },
        }),
    }
}
