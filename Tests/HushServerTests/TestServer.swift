import Foundation
import HushTestSupport
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Hummingbird
import HushClient
import HushProtocol
import HushServer
import Logging
import ThemisKit

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
