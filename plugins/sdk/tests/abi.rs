//! The plugin ABI exercised in-process, the way the gateway drives it: through the exported entry
//! point and the vtable's function pointers, or through the generic trampolines for the plugin
//! types that are not exported (a library exports one plugin only).

use std::ffi::c_void;
use std::ptr;
use std::sync::Mutex;

use wagate_plugin::{
    ABI_VERSION, Bytes, ENTRY_SYMBOL, ERROR_CAPACITY, EntryFn, ErrorBuf, Host, HostApi, LogLevel,
    Plugin, PluginVTable, Status, VTableError, check_vtable, export_plugin,
};

/// Every line logged through a test host: (the host's context tag, level, message).
static LOG: Mutex<Vec<(usize, LogLevel, String)>> = Mutex::new(Vec::new());

unsafe extern "C" fn record(context: *mut c_void, level: u32, message: Bytes) {
    let level = LogLevel::from_raw(level).expect("a known log level");
    // SAFETY: the plugin lends the message for the call.
    let message = String::from_utf8(unsafe { message.as_slice() }.to_vec()).expect("UTF-8");
    LOG.lock().unwrap().push((context as usize, level, message));
}

/// A host whose context is `tag`, so that tests running in parallel can tell their lines apart.
fn host_api(tag: usize) -> HostApi {
    HostApi {
        abi_version: ABI_VERSION,
        context: tag as *mut c_void,
        log: record,
    }
}

fn logged(tag: usize) -> Vec<(LogLevel, String)> {
    LOG.lock()
        .unwrap()
        .iter()
        .filter(|(context, _, _)| *context == tag)
        .map(|(_, level, message)| (*level, message.clone()))
        .collect()
}

/// Calls `init` as the host does; the instance, or the status and the error message.
fn init_with(
    init: wagate_plugin::InitFn,
    host: &HostApi,
    config: &[u8],
) -> Result<*mut c_void, (Status, String)> {
    let mut instance = ptr::dangling_mut::<c_void>(); // must be overwritten whatever happens
    let mut error = ErrorBuf::new();
    // SAFETY: every pointer is valid for the call; `host` outlives the instance in every test.
    let raw = unsafe { init(host, Bytes::from_slice(config), &mut instance, &mut error) };
    match Status::from_raw(raw) {
        Status::Ok => {
            assert!(!instance.is_null(), "Ok comes with an instance");
            assert_eq!(error.as_bytes(), b"", "Ok comes with no error");
            Ok(instance)
        }
        status => {
            assert!(instance.is_null(), "no instance without Ok");
            Err((status, error.message().into_owned()))
        }
    }
}

/// Calls `on_event` as the host does.
fn send(
    on_event: wagate_plugin::OnEventFn,
    instance: *mut c_void,
    event: &[u8],
) -> Result<(), (Status, String)> {
    let mut error = ErrorBuf::new();
    // SAFETY: a live instance of the right type, used by one thread, and buffers valid for the call.
    let raw = unsafe { on_event(instance, Bytes::from_slice(event), &mut error) };
    match Status::from_raw(raw) {
        Status::Ok => Ok(()),
        status => Err((status, error.message().into_owned())),
    }
}

// The one exported plugin: logs its config at init and every event it gets.

struct Echo {
    host: Host,
}

impl Plugin for Echo {
    fn init(config: &str, host: Host) -> Result<Self, String> {
        host.info(&format!("config {config}"));
        Ok(Echo { host })
    }

    fn on_event(&mut self, event: &str) -> Result<(), String> {
        self.host.debug(&format!("event {event}"));
        Ok(())
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.host.info("dropped");
    }
}

export_plugin!(Echo, name = "echo", version = "1.2.3");

fn exported() -> &'static PluginVTable {
    let entry: EntryFn = wagate_plugin_entry;
    // SAFETY: the entry point of this very binary.
    unsafe { check_vtable(entry()) }.expect("a valid vtable")
}

// Plugins driven through the trampolines directly.

/// Fails, panics or counts, as the event says.
struct Moody {
    seen: usize,
}

impl Plugin for Moody {
    fn init(config: &str, _host: Host) -> Result<Self, String> {
        match config {
            "\"panic\"" => panic!("init exploded"),
            "\"fail\"" => Err("config has no endpoint".to_owned()),
            _ => Ok(Moody { seen: 0 }),
        }
    }

    fn on_event(&mut self, event: &str) -> Result<(), String> {
        match event {
            "\"panic\"" => panic!("event {} exploded", self.seen),
            "\"panic_any\"" => std::panic::panic_any(42_u8),
            "\"fail\"" => Err("the event was refused".to_owned()),
            "\"long\"" => Err(format!("a{}", "é".repeat(ERROR_CAPACITY))),
            _ => {
                self.seen += 1;
                Ok(())
            }
        }
    }
}

/// The vtable the trampolines make for `Moody`.
const MOODY: PluginVTable = wagate_plugin::__vtable::<Moody>("moody", "0.0.1");

fn moody_seen(instance: *mut c_void) -> usize {
    // SAFETY: an instance `init` made for `Moody`, in this same process.
    unsafe { (*instance.cast::<Moody>()).seen }
}

fn destroy(vtable: &PluginVTable, instance: *mut c_void) {
    // SAFETY: a live instance of this vtable, destroyed once.
    unsafe { (vtable.destroy)(instance) };
}

#[test]
fn entry_symbol_names_the_exported_function() {
    assert_eq!(ENTRY_SYMBOL, b"wagate_plugin_entry\0");
    let vtable = exported();
    assert_eq!(vtable.abi_version, ABI_VERSION);
    // SAFETY: a vtable of this binary, which stays loaded.
    assert_eq!(unsafe { vtable.name() }, "echo");
    assert_eq!(unsafe { vtable.version() }, "1.2.3");
}

#[test]
fn init_passes_config_and_a_working_host_log() {
    let vtable = exported();
    let host = host_api(1);
    let instance = init_with(vtable.init, &host, br#"{"url":"https://example.com"}"#).unwrap();
    assert_eq!(
        logged(1),
        [(
            LogLevel::Info,
            r#"config {"url":"https://example.com"}"#.to_owned()
        )]
    );
    destroy(vtable, instance);
}

#[test]
fn events_arrive_in_order() {
    let vtable = exported();
    let host = host_api(2);
    let instance = init_with(vtable.init, &host, b"{}").unwrap();
    for seq in 1..=5 {
        send(
            vtable.on_event,
            instance,
            format!(r#"{{"seq":{seq}}}"#).as_bytes(),
        )
        .unwrap();
    }
    let events: Vec<_> = logged(2).into_iter().skip(1).collect(); // after the config line
    let expected: Vec<_> = (1..=5)
        .map(|seq| (LogLevel::Debug, format!(r#"event {{"seq":{seq}}}"#)))
        .collect();
    assert_eq!(events, expected);
    destroy(vtable, instance);
}

#[test]
fn destroy_drops_the_instance() {
    let vtable = exported();
    let host = host_api(3);
    let instance = init_with(vtable.init, &host, b"{}").unwrap();
    destroy(vtable, instance);
    assert_eq!(
        logged(3),
        [
            (LogLevel::Info, "config {}".to_owned()),
            (LogLevel::Info, "dropped".to_owned())
        ]
    );
}

#[test]
fn destroy_ignores_a_null_instance() {
    // SAFETY: null is allowed.
    unsafe { (exported().destroy)(ptr::null_mut()) };
}

#[test]
fn an_err_from_on_event_becomes_failed_with_its_message() {
    let host = host_api(10);
    let instance = init_with(MOODY.init, &host, b"{}").unwrap();
    assert_eq!(
        send(MOODY.on_event, instance, b"\"fail\""),
        Err((Status::Failed, "the event was refused".to_owned()))
    );
    destroy(&MOODY, instance);
}

#[test]
fn an_err_from_init_becomes_failed_with_its_message_and_no_instance() {
    let host = host_api(11);
    assert_eq!(
        init_with(MOODY.init, &host, b"\"fail\""),
        Err((Status::Failed, "config has no endpoint".to_owned()))
    );
}

#[test]
fn a_panic_in_on_event_becomes_panicked_and_the_instance_stays_usable() {
    let host = host_api(12);
    let instance = init_with(MOODY.init, &host, b"{}").unwrap();
    send(MOODY.on_event, instance, b"{}").unwrap();
    assert_eq!(
        send(MOODY.on_event, instance, b"\"panic\""),
        Err((Status::Panicked, "event 1 exploded".to_owned()))
    );
    send(MOODY.on_event, instance, b"{}").unwrap();
    assert_eq!(moody_seen(instance), 2);
    destroy(&MOODY, instance);
}

#[test]
fn a_panic_with_a_non_string_payload_becomes_panicked() {
    let host = host_api(13);
    let instance = init_with(MOODY.init, &host, b"{}").unwrap();
    let (status, message) = send(MOODY.on_event, instance, b"\"panic_any\"").unwrap_err();
    assert_eq!(status, Status::Panicked);
    assert!(message.contains("not a string"), "{message}");
    destroy(&MOODY, instance);
}

#[test]
fn a_panic_in_init_becomes_panicked_and_no_instance() {
    let host = host_api(14);
    assert_eq!(
        init_with(MOODY.init, &host, b"\"panic\""),
        Err((Status::Panicked, "init exploded".to_owned()))
    );
}

#[test]
fn non_utf8_event_bytes_give_failed() {
    let host = host_api(15);
    let instance = init_with(MOODY.init, &host, b"{}").unwrap();
    let (status, message) = send(MOODY.on_event, instance, b"{\"x\":\"\xff\"}").unwrap_err();
    assert_eq!(status, Status::Failed);
    assert!(
        message.starts_with("the event must be UTF-8 JSON"),
        "{message}"
    );
    assert_eq!(moody_seen(instance), 0);
    destroy(&MOODY, instance);
}

#[test]
fn non_utf8_config_gives_failed_and_no_instance() {
    let host = host_api(16);
    let (status, message) = init_with(MOODY.init, &host, b"\xc3").unwrap_err();
    assert_eq!(status, Status::Failed);
    assert!(
        message.starts_with("the plugin config must be UTF-8 JSON"),
        "{message}"
    );
}

#[test]
fn a_long_error_message_is_truncated_on_a_char_boundary() {
    let host = host_api(17);
    let instance = init_with(MOODY.init, &host, b"{}").unwrap();
    let (status, message) = send(MOODY.on_event, instance, b"\"long\"").unwrap_err();
    assert_eq!(status, Status::Failed);
    // "a" then two-byte characters: byte 512 falls inside one, so the cut is at 511.
    assert_eq!(message.len(), ERROR_CAPACITY - 1);
    assert_eq!(message, format!("a{}", "é".repeat(255)));
    destroy(&MOODY, instance);
}

#[test]
fn init_refuses_a_host_of_another_abi_version() {
    let host = HostApi {
        abi_version: ABI_VERSION + 1,
        ..host_api(18)
    };
    let (status, message) = init_with(MOODY.init, &host, b"{}").unwrap_err();
    assert_eq!(status, Status::Failed);
    assert!(
        message.contains(&format!("version {}", ABI_VERSION + 1)),
        "{message}"
    );
    assert!(
        message.contains(&format!("version {ABI_VERSION}")),
        "{message}"
    );
}

#[test]
fn null_pointers_give_failed_not_a_crash() {
    let mut error = ErrorBuf::new();
    let mut instance = ptr::null_mut();
    // SAFETY: null host, null instance and null error buffer are all allowed.
    let raw = unsafe { (MOODY.init)(ptr::null(), Bytes::EMPTY, &mut instance, &mut error) };
    assert_eq!(Status::from_raw(raw), Status::Failed);
    assert_eq!(error.message(), "init got a null host");
    let raw = unsafe { (MOODY.init)(ptr::null(), Bytes::EMPTY, ptr::null_mut(), ptr::null_mut()) };
    assert_eq!(Status::from_raw(raw), Status::Failed);
    let raw = unsafe { (MOODY.on_event)(ptr::null_mut(), Bytes::EMPTY, &mut error) };
    assert_eq!(Status::from_raw(raw), Status::Failed);
    assert_eq!(error.message(), "on_event got a null instance");
}

#[test]
fn check_vtable_refuses_a_wrong_abi_version_naming_both_versions() {
    let wrong = PluginVTable {
        abi_version: 7,
        ..wagate_plugin::__vtable::<Moody>("moody", "0.0.1")
    };
    // SAFETY: a valid vtable that lives for the call.
    let error = unsafe { check_vtable(&wrong) }.unwrap_err();
    assert_eq!(
        error,
        VTableError::AbiMismatch {
            host: ABI_VERSION,
            plugin: 7
        }
    );
    let message = error.to_string();
    assert!(message.contains("version 7"), "{message}");
    assert!(
        message.contains(&format!("version {ABI_VERSION}")),
        "{message}"
    );
}

#[test]
fn check_vtable_refuses_null() {
    // SAFETY: null is allowed.
    assert_eq!(
        unsafe { check_vtable(ptr::null()) }.unwrap_err(),
        VTableError::Null
    );
}

#[test]
fn unknown_raw_status_is_failed() {
    assert_eq!(Status::from_raw(0), Status::Ok);
    assert_eq!(Status::from_raw(1), Status::Failed);
    assert_eq!(Status::from_raw(2), Status::Panicked);
    assert_eq!(Status::from_raw(3), Status::Failed);
    assert_eq!(Status::from_raw(u32::MAX), Status::Failed);
    assert_eq!(LogLevel::from_raw(0), None);
    assert_eq!(
        LogLevel::from_raw(LogLevel::Warn.as_raw()),
        Some(LogLevel::Warn)
    );
}

#[test]
fn a_discarding_host_lets_a_plugin_be_tested_without_a_gateway() {
    let mut plugin = Echo::init("{}", Host::discard()).unwrap();
    plugin.on_event("{}").unwrap();
}
