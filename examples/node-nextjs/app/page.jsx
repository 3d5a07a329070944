export default function Page() {
  return <h1>Hello from node-nextjs</h1>;
}
