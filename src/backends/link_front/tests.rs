use super::*;

#[test]
fn only_the_exact_secret_opens_the_path() {
    let s = "abcDEF123_-abcDEF123_-abcDEF1234";
    assert_eq!(strip_secret(&format!("/s/{s}/"), s), Some(""));
    assert_eq!(strip_secret(&format!("/s/{s}/ws"), s), Some("ws"));
    assert_eq!(strip_secret(&format!("/s/{s}"), s), Some(""));
    assert_eq!(strip_secret("/s/local/", s), None);
    assert_eq!(strip_secret(&format!("/s/{s}x/"), s), None);
    assert_eq!(strip_secret(&format!("/s/{}/", &s[1..]), s), None);
    assert_eq!(strip_secret("/", s), None);
    assert_eq!(strip_secret(&format!("/x/{s}/"), s), None);
}

#[test]
fn secrets_are_fresh_and_long() {
    let (a, b) = (new_secret().unwrap(), new_secret().unwrap());
    assert_ne!(a, b);
    assert_eq!(a.len(), 32);
    assert!(a
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
}

#[test]
fn the_page_and_headers_point_at_the_secret() {
    // The page tty-share 2.4 serves (server/frontend/templates/tty-share.in.html,
    // rendered by Go's html/template, which escapes `/` in a script context).
    let page = br#"<script type="text/javascript">
        window.ttyInitialData = {
            wsPath: "\/s\/local\/ws"
        }
    </script>
    <script src="/s/local/static/tty-share.js"></script>"#;
    let out = String::from_utf8(rewrite_page(page, "SECRET")).unwrap();
    assert!(out.contains(r#"wsPath: "\/s\/SECRET\/ws""#), "{out}");
    assert!(
        out.contains(r#"src="/s/SECRET/static/tty-share.js""#),
        "{out}"
    );
    assert!(!out.contains("local"));
    let mut resp = Response::new(());
    resp.headers_mut().insert(
        "TTYSHARE-TTY-WSPATH",
        HeaderValue::from_static("/s/local/ws"),
    );
    resp.headers_mut()
        .insert("TTYSHARE-VERSION", HeaderValue::from_static("2"));
    rewrite_headers(&mut resp, "SECRET");
    assert_eq!(resp.headers()["ttyshare-tty-wspath"], "/s/SECRET/ws");
    assert_eq!(resp.headers()["ttyshare-version"], "2");
}
