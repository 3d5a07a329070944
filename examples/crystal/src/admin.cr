# The second target of shard.yml: `shards build` builds both, and the plan
# starts the first one in bin/ (admin).
puts "hello from admin"
