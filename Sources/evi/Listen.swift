import ArgumentParser
struct Listen: AsyncParsableCommand {
    func run() async throws {}
}
struct Demo: AsyncParsableCommand {
    func run() async throws {}
}
