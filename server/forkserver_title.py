"""Names the supervisor's fork server placecheck-forkserver: the supervisor lists this module in the
fork server's preload (WORKER_PRELOAD), the one place code runs in that process before it forks
workers, and nothing else imports it. Each worker then sets its own title."""
from placecheck_server.proctitle import set_process_title

set_process_title("forkserver")
