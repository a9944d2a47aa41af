import ArgumentParser

@main
struct Hush: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Hush: end-to-end encrypted group chat on Themis.",
        subcommands: [Serve.self, Chat.self, Keygen.self, Web.self, Bench.self]
    )
}
