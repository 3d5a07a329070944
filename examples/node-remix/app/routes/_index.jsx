export const meta = () => [{ title: "node-remix" }];

export default function Index() {
  return <h1>Hello from node-remix</h1>;
}
