<?php echo "Hello from php\n";
