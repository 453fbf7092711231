// Two turns of a conversation with the Vercel AI SDK's default OpenAI provider (`openai(model)`: the
// Responses API, `store` on), as an application keeps its history: the second turn sends the first
// answer back as an `item_reference`. Prints one JSON line: what each turn returned.
// Usage: node two_turns.mjs <base_url ending in /v1> <api key> <model> <stream: "stream" | "plain">
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, streamText } from "ai";

const [baseURL, apiKey, model, mode] = process.argv.slice(2);
const requests = [];
const openai = createOpenAI({
  baseURL,
  apiKey,
  fetch: async (url, init) => {
    requests.push(JSON.parse(init.body));
    return fetch(url, init);
  },
});

async function turn(messages) {
  if (mode === "stream") {
    const result = streamText({ model: openai(model), messages, maxRetries: 0 });
    let streamed = "";
    for await (const delta of result.textStream) streamed += delta;
    const response = await result.response;
    return { text: await result.text, streamed, messages: response.messages };
  }
  const result = await generateText({ model: openai(model), messages, maxRetries: 0 });
  return { text: result.text, streamed: null, messages: result.response.messages };
}

const history = [{ role: "user", content: "What is AutoGen?" }];
const first = await turn(history);
history.push(...first.messages, { role: "user", content: "Say it shorter." });
const second = await turn(history);
console.log(
  JSON.stringify({
    first: { text: first.text, streamed: first.streamed },
    second: { text: second.text, streamed: second.streamed },
    requests,
  }),
);
