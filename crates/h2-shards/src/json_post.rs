//! The request a JSON push API takes (FCM's `messages:send`, the floor example's stand-in for
//! it): made per attempt, since h2 takes the request it sends.

use http::{HeaderValue, Method, Request, Uri, header};

/// A `POST` to `uri` of a JSON body `length` bytes long, authorised by `authorization`. The URI
/// and the authorization are shared, not copied: both clone a reference count.
pub fn json_post(uri: &Uri, authorization: &HeaderValue, length: usize) -> Request<()> {
    let mut request = Request::new(());
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri.clone();
    let headers = request.headers_mut();
    headers.insert(header::AUTHORIZATION, authorization.clone());
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONTENT_LENGTH, crate::number(length as u64));
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_post_carries_its_uri_authorization_type_and_length() {
        let uri: Uri = "https://fcm.example/v1/projects/p/messages:send"
            .parse()
            .unwrap();
        let request = json_post(&uri, &HeaderValue::from_static("Bearer t"), 42);
        assert_eq!((request.method(), request.uri()), (&Method::POST, &uri));
        let headers = request.headers();
        assert_eq!(headers[header::AUTHORIZATION], "Bearer t");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(headers[header::CONTENT_LENGTH], "42");
        assert_eq!(headers.len(), 3);
    }
}
