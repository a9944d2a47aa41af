import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Hummingbird
import HushClient
import HushProtocol
import HushServer
import Logging
import ThemisKit

/// A real server in this process on 127.0.0.1, port 0, over a temporary data folder.
struct TestServer {
    let url: String
    let server: HushServer
    let task: Task<Void, any Error>
    let dataDirectory: URL

    static func start(limits: Limits = .standard, dataDirectory: URL? = nil) async throws -> TestServer {
        let directory = dataDirectory ?? FileManager.default.temporaryDirectory
            .appendingPathComponent("hush-test-\(UUID().uuidString)")
        var configuration = ServerConfiguration(dataDirectory: directory)
        configuration.port = 0
        configuration.limits = limits
        configuration.webRoot = directory.appendingPathComponent("web")
        let server = try HushServer(configuration: configuration)
        var logger = Logger(label: "hush.test")
        logger.logLevel = .critical  // shutdown of the test server logs a cancellation at error level
        let (ports, sink) = AsyncStream.makeStream(of: Int.self)
        let app = server.application(logger: logger) { port in sink.yield(port) }
        let task = Task { try await app.run() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw ClientError.connectionClosed }
        return TestServer(url: "http://127.0.0.1:\(port)", server: server, task: task, dataDirectory: directory)
    }

    func info() async throws -> ServerInfo { try await ServerInfo.fetch(url) }

    func stop() async {
        task.cancel()
        _ = await task.result
        try? FileManager.default.removeItem(at: dataDirectory)
    }
}

/// HTTP GET returning status, headers and body.
func httpGet(_ url: String) async throws -> (status: Int, headers: [String: String], body: String) {
    try await withCheckedThrowingContinuation { continuation in
        URLSession.shared.dataTask(with: URL(string: url)!) { data, response, error in
            guard let response = response as? HTTPURLResponse else {
                return continuation.resume(throwing: error ?? URLError(.badServerResponse))
            }
            var headers: [String: String] = [:]
            for (name, value) in response.allHeaderFields { headers["\(name)".lowercased()] = "\(value)" }
            continuation.resume(returning: (response.statusCode, headers, String(decoding: data ?? Data(), as: UTF8.self)))
        }.resume()
    }
}

/// Waits for the first event matching `predicate`, within `timeout`.
func next<S: AsyncSequence & Sendable>(_ sequence: S, timeout: Duration = .seconds(10),
                                       where predicate: @escaping @Sendable (S.Element) -> Bool) async throws -> S.Element
where S.Element: Sendable {
    try await withThrowingTaskGroup(of: S.Element?.self) { group in
        group.addTask {
            for try await element in sequence where predicate(element) { return element }
            return nil
        }
        group.addTask {
            try await Task.sleep(for: timeout)
            return nil
        }
        defer { group.cancelAll() }
        guard let element = try await group.next() ?? nil else { throw ClientError.timedOut }
        return element
    }
}

extension WireMessage {
    static func request(_ type: String, room: String? = nil) -> WireMessage {
        var message = WireMessage(type: type)
        message.room = room
        return message
    }
}

/// The error code a request fails with, or nil when it succeeds.
func errorCode(_ connection: HushConnection, _ request: WireMessage) async throws -> ErrorCode? {
    let reply = try await connection.exchange(request)
    return reply.type == "error" ? ErrorCode(rawValue: reply.code ?? "") : nil
}
