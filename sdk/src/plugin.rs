//! The trait every plugin implements, built-in or loaded from a library.

use std::any::TypeId;
use std::cell::Cell;

use async_trait::async_trait;
use serde_json::Value;

use crate::{BackworksResult, HttpRequest, HttpResponse, RequestAction};

/// A Backworks plugin.
///
/// Only `name`, `version` and `description` are required; every hook has a
/// default that does nothing, so a plugin implements just what it needs.
///
/// Lifecycle, as the host drives it: `initialize` once with the plugin's
/// `config` from `backworks.yaml` (as JSON), then any number of concurrent
/// `health_check`, `before_request`, `after_response` and
/// `process_endpoint_data` calls, then `shutdown` once when no other hook is
/// running. A dynamically loaded plugin runs its hooks on a tokio runtime of
/// its own (see `docs/abi.md`, "Threading"), so hooks may use tokio freely.
#[async_trait]
pub trait BackworksPlugin: Send + Sync + 'static {
    /// A short, stable name, e.g. `weather`.
    fn name(&self) -> &str;
    /// The plugin's version (semver).
    fn version(&self) -> &str;
    /// One line saying what the plugin does.
    fn description(&self) -> &str;

    /// Prepares the plugin with its configuration (`null` when it has none).
    /// An error stops the host from using the plugin.
    async fn initialize(&self, _config: &Value) -> BackworksResult<()> {
        Ok(())
    }

    /// Releases what the plugin holds. No hook runs after it.
    async fn shutdown(&self) -> BackworksResult<()> {
        Ok(())
    }

    /// `Ok(())` when the plugin can serve; an error says why it cannot.
    async fn health_check(&self) -> BackworksResult<()> {
        Ok(())
    }

    /// Runs before the endpoint: pass the request on, rewrite it, or answer it.
    ///
    /// The default passes the request on and tells the host (status
    /// [`STATUS_NOT_IMPLEMENTED`](crate::abi::STATUS_NOT_IMPLEMENTED)) that
    /// this hook need not be called again.
    async fn before_request(&self, _request: &HttpRequest) -> BackworksResult<RequestAction> {
        default_hook_ran((self as *const Self).cast(), TypeId::of::<Self>());
        Ok(RequestAction::Continue)
    }

    /// Runs after the endpoint: `Some` replaces the response, `None` keeps it.
    ///
    /// The default keeps the response and tells the host that this hook need
    /// not be called again.
    async fn after_response(
        &self,
        _request: &HttpRequest,
        _response: &HttpResponse,
    ) -> BackworksResult<Option<HttpResponse>> {
        default_hook_ran((self as *const Self).cast(), TypeId::of::<Self>());
        Ok(None)
    }

    /// Handles an endpoint: `Some(body)` answers it, `None` leaves it to the
    /// next plugin.
    ///
    /// The default handles nothing and tells the host that this hook need not
    /// be called again.
    async fn process_endpoint_data(
        &self,
        _endpoint: &str,
        _method: &str,
        _data: &str,
    ) -> BackworksResult<Option<String>> {
        default_hook_ran((self as *const Self).cast(), TypeId::of::<Self>());
        Ok(None)
    }
}

thread_local! {
    /// The plugin (address and type) whose default request hook last ran on
    /// this thread; `None` when none has since the last [`take_default_hook`].
    static DEFAULT_HOOK_RAN: Cell<Option<(*const (), TypeId)>> = const { Cell::new(None) };
}

fn default_hook_ran(plugin: *const (), type_id: TypeId) {
    DEFAULT_HOOK_RAN.set(Some((plugin, type_id)));
}

/// Clears this thread's mark, before a poll of a request hook's future
/// (ABI 1.2: a call is polled on whichever thread the host chooses).
pub(crate) fn clear_default_hook() {
    DEFAULT_HOOK_RAN.set(None);
}

/// Whether the request hook just polled to completion on this thread was the
/// trait's default (a hook `plugin` does not implement); clears the mark
/// either way.
///
/// The SDK's C-ABI export calls it once before a hook, to clear a stale mark,
/// and once after, with the plugin object the hook was called on. The mark
/// carries the plugin's address *and* type, so a plugin that forwards to
/// another plugin's default (even one stored at the same address, as its
/// first field) is not taken for one that does not implement the hook. Only
/// `before_request`, `after_response` and `process_endpoint_data` mark; the
/// defaults are no-ops, so skipping them later changes nothing but the call
/// count.
pub(crate) fn take_default_hook<P: BackworksPlugin>(plugin: &P) -> bool {
    let mark = DEFAULT_HOOK_RAN.replace(None);
    mark == Some(((plugin as *const P).cast(), TypeId::of::<P>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Bare;

    impl BackworksPlugin for Bare {
        fn name(&self) -> &str {
            "bare"
        }
        fn version(&self) -> &str {
            "0.1.0"
        }
        fn description(&self) -> &str {
            "implements no hook"
        }
    }

    /// Forwards `before_request` to a plugin that leaves it to the default.
    struct Forwarding {
        inner: Bare,
    }

    #[async_trait]
    impl BackworksPlugin for Forwarding {
        fn name(&self) -> &str {
            "forwarding"
        }
        fn version(&self) -> &str {
            "0.1.0"
        }
        fn description(&self) -> &str {
            "forwards to another plugin"
        }
        async fn before_request(&self, request: &HttpRequest) -> BackworksResult<RequestAction> {
            self.inner.before_request(request).await
        }
    }

    fn run<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    fn request() -> HttpRequest {
        HttpRequest {
            method: "GET".into(),
            path: "/".into(),
            query: None,
            headers: Default::default(),
            body: None,
        }
    }

    #[test]
    fn each_default_request_hook_marks_its_plugin_once() {
        let bare = Bare;
        let response = HttpResponse::json(200, &serde_json::json!({}));
        run(bare.before_request(&request())).unwrap();
        assert!(take_default_hook(&bare));
        assert!(!take_default_hook(&bare), "taking clears the mark");
        run(bare.after_response(&request(), &response)).unwrap();
        assert!(take_default_hook(&bare));
        run(bare.process_endpoint_data("/", "GET", "")).unwrap();
        assert!(take_default_hook(&bare));
        // Lifecycle hooks never mark.
        run(bare.health_check()).unwrap();
        assert!(!take_default_hook(&bare));
    }

    #[test]
    fn forwarding_to_another_plugins_default_is_not_unimplemented() {
        let forwarding = Forwarding { inner: Bare };
        run(forwarding.before_request(&request())).unwrap();
        assert!(!take_default_hook(&forwarding));
        // Called through a trait object, the default still marks its plugin.
        let object: Box<dyn BackworksPlugin> = Box::new(Bare);
        run(object.before_request(&request())).unwrap();
        let mark = DEFAULT_HOOK_RAN.replace(None);
        assert_eq!(
            mark,
            Some((
                std::ptr::from_ref::<dyn BackworksPlugin>(object.as_ref()).cast(),
                TypeId::of::<Bare>()
            ))
        );
    }
}
