import Foundation
import HTTPTypes
import Hummingbird
import HushProtocol

/// HTTP on the chat port: discovery, health and the web client's static files. Metrics are on a
/// listener of their own (`HushServer.metricsApplication`).
struct WebRoutes: Sendable {
    let identity: ServerIdentity
    let webRoot: URL
    let origins: OriginGate

    /// Headers on every response (docs/CODE_TRUST.md). Trusted Types are required: no string
    /// reaches an HTML or script sink, and the one policy (`hush-worker`) admits only the
    /// service worker's URL. `no-store` everywhere: the code a browser keeps is the release its
    /// service worker checked and pinned, never an HTTP cache copy.
    static func securityHeaders(scriptHashes: [String] = []) -> HTTPFields {
        let scripts = (["'self'"] + scriptHashes.map { "'\($0)'" }).joined(separator: " ")
        return [
            .contentSecurityPolicy: "default-src 'self'; script-src \(scripts); connect-src 'self'; img-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'; require-trusted-types-for 'script'; trusted-types hush-worker",
            HTTPField.Name("Cross-Origin-Opener-Policy")!: "same-origin",
            HTTPField.Name("Cross-Origin-Resource-Policy")!: "same-origin",
            HTTPField.Name("X-Content-Type-Options")!: "nosniff",
            HTTPField.Name("Referrer-Policy")!: "no-referrer",
            .cacheControl: "no-store",
        ]
    }

    /// The headers for the web root: its manifest's import map hash goes into script-src. A web
    /// root without a valid manifest gets none, and the browser refuses its inline import map.
    static func securityHeaders(webRoot: URL) -> HTTPFields {
        guard let bytes = FileManager.default.contents(atPath: webRoot.appendingPathComponent("manifest.json").path),
              let manifest = try? WebManifest.parse(Array(bytes)) else { return securityHeaders() }
        return securityHeaders(scriptHashes: manifest.scriptHashes)
    }

    static let contentTypes = [
        "html": "text/html; charset=utf-8", "css": "text/css; charset=utf-8", "mjs": "text/javascript; charset=utf-8",
        "js": "text/javascript; charset=utf-8", "svg": "image/svg+xml", "png": "image/png",
        "json": "application/json", "sig": "application/octet-stream",
    ]

    func add(to router: Router<BasicRequestContext>) {
        router.get("/.well-known/hush") { request, _ in
            var response = respond(Array(RoomPayload.json(identity.wellKnown)), type: "application/json")
            // Copies of the web client on allowed origins read the relay's key from here (§2).
            if case .allowed(let origin) = origins.verdict(origin: request.headers[.origin], host: request.head.authority) {
                response.headers[.accessControlAllowOrigin] = origin
            }
            response.headers[.vary] = "Origin"
            return response
        }
        // A request to /ws that is not a WebSocket upgrade (refused pages never get here: `OriginCheck`).
        router.get("/ws") { _, _ -> Response in throw HTTPError(.upgradeRequired, message: "/ws takes WebSocket connections.") }
        router.get("/healthz") { _, _ in respond(Array("ok\n".utf8), type: "text/plain; charset=utf-8") }
        router.get("/") { _, _ in index() }
        router.get("/**") { request, _ in try file(at: request.uri.path) }
    }

    func respond(_ body: [UInt8], type: String, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: type],
                 body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    /// `index.html` exactly as released (clients read the server key from `/.well-known/hush`),
    /// or a placeholder page.
    func index() -> Response {
        if let html = FileManager.default.contents(atPath: webRoot.appendingPathComponent("index.html").path) {
            return respond(Array(html), type: Self.contentTypes["html"]!)
        }
        let page = """
            <!doctype html>
            <html><head><title>Hush</title></head>
            <body><h1>Hush</h1><p>This server speaks the Hush protocol. The web client is not installed.</p>
            <p>Server key fingerprint: <code>\(identity.fingerprint)</code></p></body></html>
            """
        return respond(Array(page.utf8), type: Self.contentTypes["html"]!)
    }

    /// A static file under the web root: no traversal, no dotfiles, known types only.
    func file(at path: String) throws -> Response {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        guard !parts.isEmpty, parts.allSatisfy({ part in
            !part.isEmpty && !part.hasPrefix(".") && part.allSatisfy { $0.isLetter || $0.isNumber || "-_.".contains($0) }
        }), let ext = parts.last?.split(separator: ".").last, let type = Self.contentTypes[String(ext)] else {
            throw HTTPError(.notFound)
        }
        let url = parts.reduce(webRoot) { $0.appendingPathComponent(String($1)) }
        guard url.standardizedFileURL.path.hasPrefix(webRoot.standardizedFileURL.path + "/"),
              let data = FileManager.default.contents(atPath: url.path) else { throw HTTPError(.notFound) }
        if parts.count == 1, parts.first == "index.html" { return index() }
        return respond(Array(data), type: type)
    }

    /// The repository's `web/` folder, found from this source file's path.
    static var defaultWebRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("web")
    }
}

/// Puts the security headers on every response of the router, errors included: a thrown
/// error becomes its response here rather than after the middleware chain, where no header is
/// added.
struct SecurityHeadersMiddleware<Context: RequestContext>: RouterMiddleware {
    let headers: HTTPFields

    func handle(_ request: Request, context: Context,
                next: (Request, Context) async throws -> Response) async throws -> Response {
        var response: Response
        do {
            response = try await next(request, context)
        } catch {
            response = try ((error as? any HTTPResponseError) ?? HTTPError(.internalServerError)).response(from: request, context: context)
        }
        for field in headers { response.headers[field.name] = field.value }
        return response
    }
}
