//! The browser client at `/` (assets embedded by the `web-client` crate): the page, its
//! script, style and icon, gzip-compressed when the browser accepts it, with a stricter
//! Content-Security-Policy than the API docs need (no inline styles either).

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use web_client::Asset;

use crate::error::ApiError;

/// The page's policy: its own script, style, images and API only; nothing inline, nothing
/// framed, no form posts elsewhere.
pub const CLIENT_CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; manifest-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn accepts_gzip(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(header::ACCEPT_ENCODING)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|p| p.replace(' ', "") == "q=0");
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

fn etag(asset: &Asset) -> String {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::hash::DefaultHasher::new();
    asset.body.hash(&mut hasher);
    format!("\"{:016x}\"", hasher.finish())
}

fn serve(req: &HttpRequest, asset: &'static Asset, cache: &'static str) -> HttpResponse {
    let tag = etag(asset);
    let matches = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut response = if matches {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::ETAG, tag))
        .insert_header((header::CACHE_CONTROL, cache))
        .insert_header((header::VARY, "Accept-Encoding"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            CLIENT_CONTENT_SECURITY_POLICY,
        ));
    if matches {
        return response.finish();
    }
    response.content_type(asset.content_type);
    if accepts_gzip(req) {
        response
            .insert_header((header::CONTENT_ENCODING, "gzip"))
            .body(asset.gzip)
    } else {
        response.body(asset.body)
    }
}

/// `GET /`: the page (revalidated on every load, so a new release shows at once).
async fn index(req: HttpRequest) -> HttpResponse {
    serve(&req, web_client::index(), "no-cache")
}

/// `GET /assets/{name}`: the page names its script and style with a content hash, so they
/// may be kept for a year.
async fn asset(req: HttpRequest, name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let asset = web_client::find(&name)
        .filter(|a| a.name != "index.html")
        .ok_or(ApiError::NotFound("route"))?;
    Ok(serve(&req, asset, "public, max-age=31536000, immutable"))
}

/// Registers `/` and `/assets/{name}`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index))
        .route("/assets/{name}", web::get().to(asset));
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderMap;
    use actix_web::{App, test};

    use super::*;

    fn text(headers: &HeaderMap, name: header::HeaderName) -> String {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    #[actix_web::test]
    async fn the_page_comes_gzipped_with_a_strict_policy_and_revalidates() {
        let app = test::init_service(App::new().configure(routes)).await;
        let response = test::call_service(
            &app,
            test::TestRequest::get()
                .uri("/")
                .insert_header((header::ACCEPT_ENCODING, "br, gzip;q=0.8"))
                .to_request(),
        )
        .await;
        assert_eq!(response.status(), 200);
        let headers = response.headers().clone();
        assert_eq!(text(&headers, header::CONTENT_ENCODING), "gzip");
        assert_eq!(text(&headers, header::CACHE_CONTROL), "no-cache");
        let csp = text(&headers, header::CONTENT_SECURITY_POLICY);
        assert!(csp.contains("script-src 'self';") && !csp.contains("unsafe"));
        let body = test::read_body(response).await;
        assert_eq!(&body[..], web_client::index().gzip);

        let again = test::call_service(
            &app,
            test::TestRequest::get()
                .uri("/")
                .insert_header((header::IF_NONE_MATCH, text(&headers, header::ETAG)))
                .to_request(),
        )
        .await;
        assert_eq!(again.status(), 304);
    }

    #[actix_web::test]
    async fn assets_come_plain_without_gzip_and_unknown_ones_are_404() {
        let app = test::init_service(App::new().configure(routes)).await;
        let response = test::call_service(
            &app,
            test::TestRequest::get()
                .uri("/assets/app.css")
                .insert_header((header::ACCEPT_ENCODING, "gzip;q=0, identity"))
                .to_request(),
        )
        .await;
        assert_eq!(response.status(), 200);
        let headers = response.headers().clone();
        assert_eq!(text(&headers, header::CONTENT_ENCODING), "");
        assert!(text(&headers, header::CACHE_CONTROL).contains("immutable"));
        let body = test::read_body(response).await;
        let css = web_client::find("app.css").map_or(&[][..], |a| a.body);
        assert_eq!(&body[..], css);

        for uri in [
            "/assets/nope.js",
            "/assets/index.html",
            "/assets/..%2FCargo.toml",
        ] {
            let response =
                test::call_service(&app, test::TestRequest::get().uri(uri).to_request()).await;
            assert_eq!(response.status(), 404, "{uri}");
        }
    }
}
