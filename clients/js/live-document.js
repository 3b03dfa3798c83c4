// Placeholder until the client lands (issue 12 §2): the gateway includes this file.
export class LiveDocument {}
