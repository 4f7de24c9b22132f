"""The whole CCF topology on one machine: roles defined once (:mod:`ccf.stack.roles`), run under supervisord."""
