"""``leadscore monitor``: online performance from CRM outcomes, drift and fairness."""
