import Foundation
import PostgresNIO

/// Where a PostgreSQL database is: `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=…]`.
/// `description` never shows the password.
public struct PostgresLocation: Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var username: String
    public var password: String?
    public var database: String
    public var tls: TLSMode

    /// libpq's `sslmode` values that mean something here; `prefer` falls back to plain text
    /// when the server has no TLS.
    public enum TLSMode: String, Sendable { case disable, prefer, require }

    public init(host: String, port: Int = 5432, username: String, password: String? = nil, database: String,
                tls: TLSMode = .prefer) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.database = database
        self.tls = tls
    }

    /// Parses a connection URL, refusing anything it does not understand rather than guessing.
    public init(url text: String) throws {
        guard text.utf8.count <= 2048, let components = URLComponents(string: text),
              let scheme = components.scheme?.lowercased(), scheme == "postgres" || scheme == "postgresql" else {
            throw PostgresLocationError("the database must be a postgres://USER@HOST:PORT/DATABASE URL")
        }
        guard let host = components.host, !host.isEmpty else { throw PostgresLocationError("the database URL has no host") }
        guard let username = components.user, !username.isEmpty else {
            throw PostgresLocationError("the database URL has no user")
        }
        let port = components.port ?? 5432
        guard (1...65535).contains(port) else { throw PostgresLocationError("the database URL's port is not 1…65535") }
        let database = String(components.path.drop { $0 == "/" })
        guard !database.isEmpty, !database.contains("/") else {
            throw PostgresLocationError("the database URL names no database (…/DATABASE)")
        }
        var tls = TLSMode.prefer
        for item in components.queryItems ?? [] {
            guard item.name == "sslmode", let value = item.value, let mode = TLSMode(rawValue: value) else {
                throw PostgresLocationError("the database URL's only option is sslmode=disable|prefer|require")
            }
            tls = mode
        }
        self.init(host: host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host, port: port,
                  username: username, password: components.password, database: database, tls: tls)
    }

    public var description: String { "postgres://\(username)@\(host):\(port)/\(database)" }

    /// The pool's configuration: `synchronous_commit = on` is sent with every connection's
    /// startup, so no acknowledged write rests on an unflushed WAL whatever the server's default.
    var clientConfiguration: PostgresClient.Configuration {
        let clientTLS: PostgresClient.Configuration.TLS = switch tls {
        case .disable: .disable
        case .prefer: .prefer(.makeClientConfiguration())
        case .require: .require(.makeClientConfiguration())
        }
        var configuration = PostgresClient.Configuration(host: host, port: port, username: username, password: password,
                                                         database: database, tls: clientTLS)
        configuration.options.additionalStartupParameters = [("synchronous_commit", "on")]
        return configuration
    }
}

public struct PostgresLocationError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
