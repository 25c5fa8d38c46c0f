//! # web-client
//!
//! The browser client's built assets, embedded in the binary so `arbor serve` needs nothing
//! beside itself (no CDN, works offline). The sources are in `crates/web/app`; `make web`
//! rebuilds `crates/web/dist` (committed, so a newcomer never needs Node.js) and
//! `make test-browser` checks that what is committed is what the sources build to.
//!
//! Each asset comes plain and gzip-compressed (made at build time); the HTTP adapter picks
//! one by `Accept-Encoding`. This crate has no dependencies and knows nothing of HTTP.

/// One file of the client.
#[derive(Debug)]
pub struct Asset {
    /// Its name under `/assets/` (`index.html` is served at `/`).
    pub name: &'static str,
    /// Its media type.
    pub content_type: &'static str,
    /// The file as built.
    pub body: &'static [u8],
    /// The same bytes, gzip-compressed.
    pub gzip: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:literal) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_bytes!(concat!("../dist/", $name)),
            gzip: include_bytes!(concat!("../dist/", $name, ".gz")),
        }
    };
}

/// Every file of the client.
pub static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
];

/// The page itself.
#[must_use]
pub fn index() -> &'static Asset {
    &ASSETS[0]
}

/// The asset called `name`, if there is one.
#[must_use]
pub fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_script_and_style_and_has_no_inline_script() {
        let page = std::str::from_utf8(index().body).unwrap_or_default();
        assert!(page.contains("<script type=\"module\" src=\"/assets/app.js?v="));
        assert!(page.contains("href=\"/assets/app.css?v="));
        // Every <script> has a src: nothing inline for the CSP to refuse.
        assert_eq!(
            page.matches("<script").count(),
            page.matches(" src=").count()
        );
        assert!(!page.contains("http://") && !page.contains("https://"));
    }

    #[test]
    fn every_asset_has_its_gzip_twin_smaller_than_itself() {
        for a in ASSETS {
            assert!(!a.body.is_empty(), "{} is empty", a.name);
            assert_eq!(&a.gzip[..2], &[0x1f, 0x8b], "{} is not gzip", a.name);
            assert!(a.gzip.len() < a.body.len(), "{} does not shrink", a.name);
        }
        assert!(find("app.js").is_some() && find("nope.js").is_none());
    }
}
