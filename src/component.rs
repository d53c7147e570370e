//! The WIT export (`wit/lock.wit`): protocol errors become WIT errors here,
//! and nowhere else.

use std::time::Duration;

use crate::format::Marker;
use crate::protocol;
use crate::LockError;

wit_bindgen::generate!({ world: "guest", path: "wit" });

use exports::uuidlock::lock::lock::{Error, Guest, Holder, Options};

struct Component;

impl Guest for Component {
    fn default_options() -> Options {
        let defaults = protocol::Options::default();
        Options {
            prefix: defaults.prefix,
            verification_delay_ns: nanos(defaults.verification_delay),
            retry_interval_ns: nanos(defaults.retry_interval),
            timeout_ns: defaults.timeout.map(nanos),
        }
    }

    fn acquire(path: String, options: Options) -> Result<String, Error> {
        let options = protocol::Options {
            prefix: options.prefix,
            verification_delay: Duration::from_nanos(options.verification_delay_ns),
            retry_interval: Duration::from_nanos(options.retry_interval_ns),
            timeout: options.timeout_ns.map(Duration::from_nanos),
        };
        Ok(protocol::acquire(&path, &options).map_err(to_wit)?.into_string())
    }

    fn release(path: String, token: String) -> Result<(), Error> {
        protocol::release(&path, &token).map_err(to_wit)
    }

    fn status(path: String) -> Result<Option<Holder>, Error> {
        Ok(protocol::status(&path).map_err(to_wit)?.map(|marker| match marker {
            Marker::Uuidlock(token) => Holder::Uuidlock(token.into_string()),
            Marker::Foreign(shown) => Holder::Foreign(shown),
        }))
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn to_wit(error: LockError) -> Error {
    match error {
        LockError::Timeout => Error::Timeout,
        LockError::NotOwner => Error::NotOwner,
        LockError::InvalidPath(why) => Error::InvalidPath(why),
        LockError::InvalidOptions(why) => Error::InvalidOptions(why),
        LockError::InvalidToken(why) => Error::InvalidToken(why),
        LockError::OutsideSandbox(why) => Error::OutsideSandbox(why),
        LockError::Io(why) => Error::Io(why),
    }
}

export!(Component);
