(defproject clojure "0.1.0"
  :dependencies [[org.clojure/clojure "1.11.1"]]
  :main clojure.core
  :aot :all)
