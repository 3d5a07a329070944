# A tiny HTTP server on $PORT answering "$GREETING $MESSAGE" (perl-base
# is in every Debian minbase, so the image needs no packages).
use strict;
use IO::Socket::INET;
my $port = $ENV{PORT} || 8080;
my $srv = IO::Socket::INET->new(LocalAddr => "0.0.0.0", LocalPort => $port, Listen => 5, ReuseAddr => 1)
    or die "listen on $port: $!";
print "listening on $port\n";
while (my $c = $srv->accept) {
    my $req = <$c>;
    my $body = "$ENV{GREETING} $ENV{MESSAGE}\n";
    print $c "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " . length($body) . "\r\n\r\n$body";
    close $c;
}
