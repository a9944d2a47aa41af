import ArgumentParser
import Foundation
import HushClient
import HushTerminal
#if canImport(Glibc)
import Glibc
#endif

/// The key store a command works on: `--store` / `HUSH_STORE` / `~/.hush/keystore.hush`,
/// passphrase from `HUSH_PASSPHRASE` or asked on the terminal without echo.
enum StoreAccess {
    static func keyStore(path flag: String?, creating: Bool = false) throws -> KeyStoreFile {
        let path = KeyStoreFile.defaultPath(flag: flag)
        let passphrase: String
        if let env = ProcessInfo.processInfo.environment["HUSH_PASSPHRASE"], !env.isEmpty {
            passphrase = env
        } else {
            let isNew = creating && !FileManager.default.fileExists(atPath: path)
            guard let first = readSecret(prompt: isNew ? "New key store passphrase for \(path): " : "Passphrase for \(path): "),
                  !first.isEmpty else { throw CLIError("a passphrase is needed (set HUSH_PASSPHRASE or type it)") }
            if isNew {
                guard readSecret(prompt: "Repeat the passphrase: ") == first else { throw CLIError("the passphrases differ") }
            }
            passphrase = first
        }
        return KeyStoreFile(path: path, passphrase: passphrase)
    }

    /// Reads a line from the terminal with echo off.
    static func readSecret(prompt: String) -> String? {
        let fd = Glibc.open("/dev/tty", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        _ = prompt.withCString { Glibc.write(fd, $0, strlen($0)) }
        var saved = termios()
        let isTerminal = tcgetattr(fd, &saved) == 0
        if isTerminal {
            var quiet = saved
            quiet.c_lflag &= ~tcflag_t(ECHO)
            tcsetattr(fd, TCSAFLUSH, &quiet)
        }
        defer {
            if isTerminal { tcsetattr(fd, TCSAFLUSH, &saved) }
            _ = "\n".withCString { Glibc.write(fd, $0, 1) }
        }
        var bytes: [UInt8] = []
        var byte: UInt8 = 0
        while Glibc.read(fd, &byte, 1) == 1, byte != UInt8(ascii: "\n") {
            bytes.append(byte)
            if bytes.count > 4096 { break }
        }
        var text = String(decoding: bytes, as: UTF8.self)
        if text.hasSuffix("\r") { text.removeLast() }
        return text
    }
}

/// A failure worded for the user; the command exits 1 with it on stderr.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Runs a command body: user-facing errors go to stderr as one line and exit 1.
/// Opens a room of the key store, runs `body`, and always closes the session (which writes
/// what is not saved yet), also when `body` throws.
func withSession(store flag: String?, room: String, _ body: (ChatSession) async throws -> Void) async throws {
    let session = try await ChatSession.open(store: try StoreAccess.keyStore(path: flag), room: room)
    do {
        try await body(session)
    } catch {
        await session.close()
        throw error
    }
    await session.close()
}

func reportingErrors(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let exit as ExitCode {
        throw exit  // the command said why already
    } catch {
        FileHandle.standardError.write(Data(("hush: " + describe(error) + "\n").utf8))
        throw ExitCode.failure
    }
}

func describe(_ error: any Error) -> String {
    switch error {
    case let error as CustomStringConvertible where !(error is NSError): error.description
    default: "\(error)"
    }
}

/// One line to stdout with a direct write: no stdio buffer, and no `fflush(NULL)`, which would
/// wait for the stdin lock held by the thread reading typed lines.
func printOut(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

func printErr(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}
