defmodule Hello.MixProject do
  use Mix.Project

  def project do
    [app: :hello, version: "0.1.0", elixir: "~> 1.14", deps: deps()]
  end

  defp deps do
    [{:phoenix, "~> 1.7"}]
  end

  defp aliases do
    ["assets.deploy": ["esbuild default --minify", "phx.digest"]]
  end
end
