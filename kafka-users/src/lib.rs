//! Users and ACLs of a Kafka cluster through librdkafka's admin API in C: rust-rdkafka wraps
//! neither SCRAM credentials nor ACLs. The workspace's only calls into C live here, so every other
//! crate forbids `unsafe`; each block says why it is sound. Each call gets a result queue of its
//! own and blocks until its event arrives (callers run these on a blocking thread); librdkafka
//! copies the objects a call is given, and every object it hands out is freed by a guard here.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char};
use std::ptr;

use rdkafka_sys as rd;

use std::marker::PhantomData;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::client::Client;

/// A Kafka resource a tenant is granted everything on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KafkaResource {
    Topic,
    Group,
    TransactionalId,
}

/// One Kafka ACL binding as the operator writes them: allow operation `ALL`, from any host.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KafkaAcl {
    /// `User:<name>`.
    pub principal: String,
    pub resource: KafkaResource,
    /// The name, or its prefix when `prefixed`; `*` with `prefixed: false` is every name.
    pub name: String,
    pub prefixed: bool,
}

/// What fails a call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action} failed: {message}")]
    Operation { action: &'static str, message: String },
    #[error("{action} took longer than {after:?}")]
    Timeout { action: &'static str, after: Duration },
}

impl Error {
    fn operation(action: &'static str, error: impl std::fmt::Display) -> Self {
        Error::Operation { action, message: error.to_string() }
    }
}

/// An admin client's native handle, borrowed for the calls, and how long each may wait.
pub struct Handle<'a> {
    native: *mut rd::rd_kafka_t,
    timeout: Duration,
    client: PhantomData<&'a ()>,
}

impl<'a> Handle<'a> {
    /// Borrows `client` (an `AdminClient`'s `inner()`) for calls that wait up to `timeout`.
    #[must_use]
    pub fn new<C: ClientContext>(client: &'a Client<C>, timeout: Duration) -> Self {
        Self { native: client.native_ptr(), timeout, client: PhantomData }
    }
}

/// PBKDF2 iterations of a SCRAM credential: Kafka's minimum for SCRAM-SHA-512.
const SCRAM_ITERATIONS: i32 = 4096;

struct ResultQueue(*mut rd::rd_kafka_queue_t);

impl Drop for ResultQueue {
    fn drop(&mut self) {
        // SAFETY: made by rd_kafka_queue_new, destroyed once.
        unsafe { rd::rd_kafka_queue_destroy(self.0) }
    }
}

struct Event(*mut rd::rd_kafka_event_t);

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: polled from a queue, owned here, destroyed once.
        unsafe { rd::rd_kafka_event_destroy(self.0) }
    }
}

/// An ACL binding or filter made here, destroyed when dropped.
struct Binding(*mut rd::rd_kafka_AclBinding_t);

impl Drop for Binding {
    fn drop(&mut self) {
        // SAFETY: made by rd_kafka_AclBinding(Filter)_new, destroyed once.
        unsafe { rd::rd_kafka_AclBinding_destroy(self.0) }
    }
}

// Error codes as plain integers: the bindings model them as a Rust enum, and a code the bindings
// do not list (a newer broker's) would not be a valid value of it.
#[allow(clashing_extern_declarations)]
unsafe extern "C" {
    #[link_name = "rd_kafka_event_error"]
    fn event_error_code(event: *mut rd::rd_kafka_event_t) -> i32;
    #[link_name = "rd_kafka_error_code"]
    fn error_code(error: *const rd::rd_kafka_error_t) -> i32;
    #[link_name = "rd_kafka_err2str"]
    fn error_name(code: i32) -> *const c_char;
}

/// A C string librdkafka returned, copied; empty for null.
fn text(pointer: *const c_char) -> String {
    if pointer.is_null() {
        return String::new();
    }
    // SAFETY: librdkafka returns NUL-terminated strings that live as long as their object.
    unsafe { CStr::from_ptr(pointer) }.to_string_lossy().into_owned()
}

/// The message of an `rd_kafka_error_t`, or `None` for no error.
fn error_text(error: *const rd::rd_kafka_error_t) -> Option<String> {
    if error.is_null() {
        return None;
    }
    // SAFETY: a non-null error belongs to its result object, alive during this call.
    let (code, message) = unsafe { (error_code(error), text(rd::rd_kafka_error_string(error))) };
    // Some results carry an error object that says "no error".
    (code != 0).then(|| describe(code, message))
}

/// `message`, or the code's own description when the message is empty.
fn describe(code: i32, message: String) -> String {
    if message.is_empty() {
        // SAFETY: err2str returns a static string for every code, known or not.
        format!("error {code}: {}", text(unsafe { error_name(code) }))
    } else {
        message
    }
}

fn c_string(action: &'static str, value: &str) -> Result<CString, Error> {
    CString::new(value).map_err(|_| Error::operation(action, format!("{value:?} contains a NUL byte")))
}

/// The typed result of an event; an error when the answer is of another kind (null).
fn answer<T>(action: &'static str, result: *const T) -> Result<*const T, Error> {
    if result.is_null() {
        return Err(Error::operation(action, "the broker's answer was of another kind"));
    }
    Ok(result)
}

/// The elements of an array a result hands out with its count.
///
/// # Safety
/// `array` must hold `count` pointers that live as long as the result, and the slice must not
/// outlive it.
unsafe fn elements<'a, T>(array: *mut *const T, count: usize) -> &'a [*const T] {
    if array.is_null() || count == 0 {
        return &[];
    }
    // SAFETY: the caller's promise.
    unsafe { std::slice::from_raw_parts(array, count) }
}

/// Starts one admin call on a fresh result queue and waits for its event.
fn call(
    client: &Handle<'_>,
    action: &'static str,
    start: impl FnOnce(*mut rd::rd_kafka_queue_t),
) -> Result<Event, Error> {
    // SAFETY: the handle borrows a live client.
    let queue = ResultQueue(unsafe { rd::rd_kafka_queue_new(client.native) });
    start(queue.0);
    let wait = i32::try_from(client.timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: the queue is alive; the event, if any, is ours.
    let event = unsafe { rd::rd_kafka_queue_poll(queue.0, wait) };
    if event.is_null() {
        return Err(Error::Timeout { action, after: client.timeout });
    }
    let event = Event(event);
    // SAFETY: a live event.
    let code = unsafe { event_error_code(event.0) };
    if code != 0 {
        // SAFETY: as above.
        let message = text(unsafe { rd::rd_kafka_event_error_string(event.0) });
        return Err(Error::operation(action, describe(code, message)));
    }
    Ok(event)
}

/// The users that have a SCRAM credential.
pub fn scram_users(client: &Handle<'_>) -> Result<Vec<String>, Error> {
    const ACTION: &str = "describe SCRAM users";
    let event = call(client, ACTION, |queue| {
        // SAFETY: no user list (NULL, 0) means every user; default options.
        unsafe { rd::rd_kafka_DescribeUserScramCredentials(client.native, ptr::null_mut(), 0, ptr::null(), queue) }
    })?;
    let mut users = Vec::new();
    // SAFETY: the event is a DescribeUserScramCredentials result; the array and its elements live
    // as long as the event.
    unsafe {
        let result = answer(ACTION, rd::rd_kafka_event_DescribeUserScramCredentials_result(event.0))?;
        let mut count = 0;
        let descriptions = rd::rd_kafka_DescribeUserScramCredentials_result_descriptions(result, &raw mut count);
        for &description in elements(descriptions, count) {
            if let Some(error) = error_text(rd::rd_kafka_UserScramCredentialsDescription_error(description)) {
                return Err(Error::operation(ACTION, error));
            }
            if rd::rd_kafka_UserScramCredentialsDescription_scramcredentialinfo_count(description) > 0 {
                users.push(text(rd::rd_kafka_UserScramCredentialsDescription_user(description)));
            }
        }
    }
    Ok(users)
}

/// Sets the SCRAM-SHA-512 credential of each `(user, password)` in `upsert` (a random salt each)
/// and removes those of `delete`.
pub fn alter_scram_users(client: &Handle<'_>, upsert: &[(String, String)], delete: &[String]) -> Result<(), Error> {
    const ACTION: &str = "alter SCRAM users";
    if upsert.is_empty() && delete.is_empty() {
        return Ok(());
    }
    let mechanism = rd::rd_kafka_ScramMechanism_t::RD_KAFKA_SCRAM_MECHANISM_SHA_512;
    // Every name checked before any alteration is made: an early return must not leak them.
    let upsert_names = upsert.iter().map(|(user, _)| c_string(ACTION, user)).collect::<Result<Vec<_>, _>>()?;
    let delete_names = delete.iter().map(|user| c_string(ACTION, user)).collect::<Result<Vec<_>, _>>()?;
    let mut alterations = Vec::with_capacity(upsert.len() + delete.len());
    for (name, (_, password)) in upsert_names.iter().zip(upsert) {
        // SAFETY: name and password are valid for the call, which copies them; no salt (NULL, 0)
        // has librdkafka draw a random one.
        alterations.push(unsafe {
            rd::rd_kafka_UserScramCredentialUpsertion_new(
                name.as_ptr(),
                mechanism,
                SCRAM_ITERATIONS,
                password.as_ptr(),
                password.len(),
                ptr::null(),
                0,
            )
        });
    }
    for name in &delete_names {
        // SAFETY: as above.
        alterations.push(unsafe { rd::rd_kafka_UserScramCredentialDeletion_new(name.as_ptr(), mechanism) });
    }
    let event = call(client, ACTION, |queue| {
        // SAFETY: the alterations are live; librdkafka copies them.
        unsafe {
            rd::rd_kafka_AlterUserScramCredentials(
                client.native,
                alterations.as_mut_ptr(),
                alterations.len(),
                ptr::null(),
                queue,
            );
        }
    });
    // SAFETY: made above, destroyed once, after the call copied them.
    unsafe { rd::rd_kafka_UserScramCredentialAlteration_destroy_array(alterations.as_mut_ptr(), alterations.len()) };
    let event = event?;
    // SAFETY: an AlterUserScramCredentials result, alive with the event.
    unsafe {
        let result = answer(ACTION, rd::rd_kafka_event_AlterUserScramCredentials_result(event.0))?;
        let mut count = 0;
        let responses = rd::rd_kafka_AlterUserScramCredentials_result_responses(result, &raw mut count);
        for &response in elements(responses, count) {
            if let Some(error) = error_text(rd::rd_kafka_AlterUserScramCredentials_result_response_error(response)) {
                let user = text(rd::rd_kafka_AlterUserScramCredentials_result_response_user(response));
                return Err(Error::operation(ACTION, format!("user {user}: {error}")));
            }
        }
    }
    Ok(())
}

fn resource_type(resource: KafkaResource) -> rd::rd_kafka_ResourceType_t {
    match resource {
        KafkaResource::Topic => rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TOPIC,
        KafkaResource::Group => rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_GROUP,
        KafkaResource::TransactionalId => rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TRANSACTIONAL_ID,
    }
}

/// A binding for `acl` (a filter matching exactly it when `filter`).
fn binding(action: &'static str, acl: &KafkaAcl, filter: bool) -> Result<Binding, Error> {
    let name = c_string(action, &acl.name)?;
    let principal = c_string(action, &acl.principal)?;
    let pattern = if acl.prefixed {
        rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_PREFIXED
    } else {
        rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_LITERAL
    };
    let permission = rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW;
    let new = if filter { rd::rd_kafka_AclBindingFilter_new } else { rd::rd_kafka_AclBinding_new };
    let mut message = [0 as c_char; 256];
    // SAFETY: the strings are valid for the call, which copies them; the error buffer is ours.
    let made = unsafe {
        new(
            resource_type(acl.resource),
            name.as_ptr(),
            pattern,
            principal.as_ptr(),
            c"*".as_ptr(),
            rd::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_ALL,
            permission,
            message.as_mut_ptr(),
            message.len(),
        )
    };
    if made.is_null() {
        return Err(Error::operation(action, text(message.as_ptr())));
    }
    Ok(Binding(made))
}

/// The binding as a [`KafkaAcl`], when it has the form the operator writes (allow operation ALL
/// from any host, on a topic, group or transactional id); `None` for any other. librdkafka maps
/// values it does not know to UNKNOWN, so the enums hold valid values.
///
/// # Safety
/// `acl` must be a live binding.
unsafe fn read_binding(acl: *const rd::rd_kafka_AclBinding_t) -> Option<KafkaAcl> {
    use rd::rd_kafka_ResourcePatternType_t as Pattern;
    use rd::rd_kafka_ResourceType_t as Type;
    // SAFETY: the caller's promise.
    unsafe {
        let resource = match rd::rd_kafka_AclBinding_restype(acl) {
            Type::RD_KAFKA_RESOURCE_TOPIC => KafkaResource::Topic,
            Type::RD_KAFKA_RESOURCE_GROUP => KafkaResource::Group,
            Type::RD_KAFKA_RESOURCE_TRANSACTIONAL_ID => KafkaResource::TransactionalId,
            _ => return None,
        };
        let prefixed = match rd::rd_kafka_AclBinding_resource_pattern_type(acl) {
            Pattern::RD_KAFKA_RESOURCE_PATTERN_PREFIXED => true,
            Pattern::RD_KAFKA_RESOURCE_PATTERN_LITERAL => false,
            _ => return None,
        };
        let operation = rd::rd_kafka_AclBinding_operation(acl);
        if operation != rd::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_ALL
            || text(rd::rd_kafka_AclBinding_host(acl)) != "*"
        {
            return None;
        }
        if rd::rd_kafka_AclBinding_permission_type(acl)
            != rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW
        {
            return None;
        }
        Some(KafkaAcl {
            principal: text(rd::rd_kafka_AclBinding_principal(acl)),
            resource,
            name: text(rd::rd_kafka_AclBinding_name(acl)),
            prefixed,
        })
    }
}

/// Every ACL of the cluster that has the form the operator writes.
pub fn acls(client: &Handle<'_>) -> Result<Vec<KafkaAcl>, Error> {
    const ACTION: &str = "describe ACLs";
    let mut message = [0 as c_char; 256];
    // SAFETY: a filter matching everything (ANY, NULLs for any name, principal and host).
    let filter = unsafe {
        rd::rd_kafka_AclBindingFilter_new(
            rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_ANY,
            ptr::null(),
            rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_ANY,
            ptr::null(),
            ptr::null(),
            rd::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_ANY,
            rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ANY,
            message.as_mut_ptr(),
            message.len(),
        )
    };
    if filter.is_null() {
        return Err(Error::operation(ACTION, text(message.as_ptr())));
    }
    let filter = Binding(filter);
    let event = call(client, ACTION, |queue| {
        // SAFETY: a live filter, copied by the call.
        unsafe { rd::rd_kafka_DescribeAcls(client.native, filter.0, ptr::null(), queue) }
    })?;
    let mut found = Vec::new();
    // SAFETY: a DescribeAcls result; its bindings live with the event.
    unsafe {
        let result = answer(ACTION, rd::rd_kafka_event_DescribeAcls_result(event.0))?;
        let mut count = 0;
        let bindings = rd::rd_kafka_DescribeAcls_result_acls(result, &raw mut count);
        for &binding in elements(bindings, count) {
            found.extend(read_binding(binding));
        }
    }
    Ok(found)
}

/// Creates `acls`.
pub fn create_acls(client: &Handle<'_>, acls: &[KafkaAcl]) -> Result<(), Error> {
    const ACTION: &str = "create ACLs";
    // SAFETY: the bindings are live for the call, which copies them; the results live with the
    // event they are read from.
    change_acls(
        client,
        ACTION,
        acls,
        false,
        |pointers, count, queue| unsafe {
            rd::rd_kafka_CreateAcls(client.native, pointers, count, ptr::null(), queue);
        },
        |event| unsafe {
            let result = answer(ACTION, rd::rd_kafka_event_CreateAcls_result(event.0))?;
            let mut count = 0;
            let results = rd::rd_kafka_CreateAcls_result_acls(result, &raw mut count);
            Ok(elements(results, count).iter().map(|&r| error_text(rd::rd_kafka_acl_result_error(r))).collect())
        },
    )
}

/// Deletes exactly `acls`.
pub fn delete_acls(client: &Handle<'_>, acls: &[KafkaAcl]) -> Result<(), Error> {
    const ACTION: &str = "delete ACLs";
    // SAFETY: as in `create_acls`, with filters.
    change_acls(
        client,
        ACTION,
        acls,
        true,
        |pointers, count, queue| unsafe {
            rd::rd_kafka_DeleteAcls(client.native, pointers, count, ptr::null(), queue);
        },
        |event| unsafe {
            let result = answer(ACTION, rd::rd_kafka_event_DeleteAcls_result(event.0))?;
            let mut count = 0;
            let responses = rd::rd_kafka_DeleteAcls_result_responses(result, &raw mut count);
            Ok(elements(responses, count)
                .iter()
                .map(|&r| error_text(rd::rd_kafka_DeleteAcls_result_response_error(r)))
                .collect())
        },
    )
}

/// Creates or deletes `acls` (as bindings, or as exact filters when `filter`): `start` makes the
/// call, `errors` reads each one's error from the event.
fn change_acls(
    client: &Handle<'_>,
    action: &'static str,
    acls: &[KafkaAcl],
    filter: bool,
    start: impl FnOnce(*mut *mut rd::rd_kafka_AclBinding_t, usize, *mut rd::rd_kafka_queue_t),
    errors: impl FnOnce(&Event) -> Result<Vec<Option<String>>, Error>,
) -> Result<(), Error> {
    if acls.is_empty() {
        return Ok(());
    }
    let bindings = acls.iter().map(|acl| binding(action, acl, filter)).collect::<Result<Vec<_>, _>>()?;
    let mut pointers: Vec<_> = bindings.iter().map(|b| b.0).collect();
    let event = call(client, action, |queue| start(pointers.as_mut_ptr(), pointers.len(), queue))?;
    match errors(&event)?.into_iter().flatten().next() {
        Some(error) => Err(Error::operation(action, error)),
        None => Ok(()),
    }
}
