//! The caller's identity, as the gateway forwards it in gRPC metadata. Services sit
//! behind the gateway and trust these keys; the gateway strips any a client sent.

use std::net::IpAddr;

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Status};

/// Verified user id.
pub const USER_KEY: &str = "x-confab-user";
/// "1" for anonymous sessions.
pub const ANONYMOUS_KEY: &str = "x-confab-anonymous";
/// Client IP as resolved by the gateway (trusted `X-Forwarded-For` hops).
pub const CLIENT_ADDR_KEY: &str = "x-confab-client-addr";
/// Every identity key, for the gateway to strip from client requests.
pub const ALL_KEYS: &[&str] = &[USER_KEY, ANONYMOUS_KEY, CLIENT_ADDR_KEY];

pub const MAX_USER_ID_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: String,
    pub anonymous: bool,
    pub client_addr: Option<IpAddr>,
}

impl Identity {
    pub fn user(user_id: impl Into<String>) -> Self {
        Self {
            user_id: user_id.into(),
            anonymous: false,
            client_addr: None,
        }
    }

    pub fn anonymous(user_id: impl Into<String>, client_addr: Option<IpAddr>) -> Self {
        Self {
            user_id: user_id.into(),
            anonymous: true,
            client_addr,
        }
    }

    /// User ids are short and printable so they are safe as keys, labels and log fields.
    pub fn is_valid_user_id(id: &str) -> bool {
        !id.is_empty()
            && id.len() <= MAX_USER_ID_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:@-".contains(&b))
    }

    /// Reads the identity; UNAUTHENTICATED when missing or malformed.
    pub fn from_metadata(md: &MetadataMap) -> Result<Self, Status> {
        let user_id = md
            .get(USER_KEY)
            .ok_or_else(|| Status::unauthenticated("no identity: sign in or start a session"))?
            .to_str()
            .map_err(|_| Status::unauthenticated("malformed identity"))?;
        if !Self::is_valid_user_id(user_id) {
            return Err(Status::unauthenticated("malformed identity"));
        }
        let anonymous = md.get(ANONYMOUS_KEY).is_some_and(|v| v == "1");
        let client_addr = md
            .get(CLIENT_ADDR_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Ok(Self {
            user_id: user_id.to_owned(),
            anonymous,
            client_addr,
        })
    }

    pub fn from_request<T>(req: &Request<T>) -> Result<Self, Status> {
        Self::from_metadata(req.metadata())
    }

    /// Writes the identity into outgoing metadata (replacing what was there).
    pub fn write_to(&self, md: &mut MetadataMap) {
        for key in ALL_KEYS {
            md.remove(*key);
        }
        if let Ok(v) = MetadataValue::try_from(self.user_id.as_str()) {
            md.insert(USER_KEY, v);
        }
        if self.anonymous {
            md.insert(ANONYMOUS_KEY, MetadataValue::from_static("1"));
        }
        if let Some(addr) = self.client_addr
            && let Ok(v) = MetadataValue::try_from(addr.to_string())
        {
            md.insert(CLIENT_ADDR_KEY, v);
        }
    }

    /// A request carrying this identity, for calls to other services.
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut req = Request::new(message);
        self.write_to(req.metadata_mut());
        req
    }

    /// Rate-limit subject: the user for signed-in users; the client address for
    /// anonymous traffic (falling back to the session when no address is known).
    pub fn rate_limit_subject(&self) -> String {
        match (self.anonymous, self.client_addr) {
            (true, Some(addr)) => format!("ip:{addr}"),
            _ => format!("user:{}", self.user_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_metadata() {
        let id = Identity::anonymous("anon-1", Some("203.0.113.7".parse().unwrap()));
        let req = id.request(());
        assert_eq!(Identity::from_request(&req).unwrap(), id);
        assert_eq!(id.rate_limit_subject(), "ip:203.0.113.7");
        assert_eq!(Identity::user("alice").rate_limit_subject(), "user:alice");
    }

    #[test]
    fn missing_or_malformed_is_unauthenticated() {
        let req = Request::new(());
        assert_eq!(
            Identity::from_request(&req).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let mut req = Request::new(());
        req.metadata_mut()
            .insert(USER_KEY, MetadataValue::from_static("bad id with spaces"));
        assert_eq!(
            Identity::from_request(&req).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert!(!Identity::is_valid_user_id(&"a".repeat(129)));
    }
}
