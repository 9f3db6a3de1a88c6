import { NodeRuntime } from "@effect/platform-node"
import { Cause, Console, Effect, Layer } from "effect"
import * as App from "./App.js"
import * as Cli from "./Config/Cli.js"
import { ConfigSource } from "./Config/SidecarConfig.js"
import * as Logging from "./Observability/Logging.js"
import * as Tracing from "./Observability/Tracing.js"
import { version } from "./Version.js"

const command = Cli.parseCommand(process.argv.slice(2))

if (command._tag === "Help") console.log(Cli.helpText())
else if (command._tag === "Version") console.log(version)
else if (command._tag === "Invalid") {
  console.error(command.message)
  process.exitCode = 2
}
else {
  const main = App.layer.pipe(
    Layer.provide([Logging.layer, Tracing.layer]),
    Layer.provide(Cli.configLayer(command.configFile, process.env)),
    Layer.provide(Layer.succeed(ConfigSource, { configFile: command.configFile, env: process.env }))
  )
  Layer.launch(main).pipe(
    Effect.tapError((error) => Console.error(error.message)),
    // A defect while starting (an unreadable file, a bug) would otherwise exit 1 without a word.
    Effect.tapDefect((cause) => Console.error(`start-up failed: ${Cause.pretty(cause)}`)),
    NodeRuntime.runMain({ disableErrorReporting: true, disablePrettyLogger: true })
  )
}
