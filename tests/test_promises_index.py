"""The index of which test pins which README promise.

PROMISES maps each bold-titled guarantee of the README ("What it guarantees" and the PostgreSQL
section's "What holds on PostgreSQL") to the concrete promises it makes, and each promise to the
tests that fail if it breaks ("tests/FILE.py::NAME", or "tests/FILE.py::CLASS::NAME"; a
parametrized test is named without its parameters). The tests below keep the index honest: a
new README guarantee without an entry fails, naming it; so does a listed test that is gone, and
a promise with no test.
"""
import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SECTIONS = ("## What it guarantees", "## PostgreSQL")

PROMISES = {
    "One commit authority, enforced by SQLite.": {
        "transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE) only from the coordinator, "
        "however spelled or sent": [
            "tests/test_db_guard.py::test_transaction_control_is_refused_however_spelled_and_sent",
            "tests/test_db_guard.py::test_raw_transaction_sql_from_a_driver_is_refused",
            "tests/test_guard_refusals.py::test_sending_transaction_control_on_the_raw_connection_is_refused_as_control",
            "tests/test_guard_refusals.py::"
            "test_a_prepared_statement_with_the_text_of_transaction_control_is_refused_inside_a_transaction",
        ],
        "writes only inside a coordinator transaction, however spelled (comments, case, WITH, REPLACE) "
        "and through Peewee or the raw connection": [
            "tests/test_db_guard.py::test_write_outside_a_transaction_is_refused_and_reads_are_not",
            "tests/test_db_guard.py::test_a_write_outside_a_transaction_is_refused_however_spelled_and_sent",
            "tests/test_promises_guard.py::test_the_guard_refuses_with_delete_and_replace_outside_a_transaction",
            "tests/test_guard_refusals.py::test_executemany_on_the_raw_connection_or_cursor_needs_a_coordinator_transaction",
            "tests/test_db_guard.py::test_pragmas_that_change_the_file_and_attach_are_writes",
            "tests/test_db_guard.py::test_a_writable_blob_needs_a_coordinator_transaction",
        ],
        "the database's commit(), rollback(), atomic(), transaction(), manual_commit() raise CommitForbidden": [
            "tests/test_db_guard.py::test_transaction_control_from_a_driver_is_refused",
            "tests/test_db_guard.py::test_peewee_and_connection_transaction_methods_are_refused",
            "tests/test_db_guard.py::test_commit_inside_a_coordinator_transaction_is_still_refused",
            "tests/test_promises_guard.py::test_the_guard_refuses_each_transaction_method_from_a_driver",
            "tests/test_promises_guard.py::"
            "test_the_guard_refuses_each_nested_transaction_method_and_the_coordinators_work_commits",
            "tests/test_promises_guard.py::"
            "test_the_guard_refuses_the_connections_own_commit_and_rollback_inside_a_transaction",
        ],
        "a refusal names the caller's file:line and changes nothing": [
            "tests/test_guard_refusals.py::test_a_raw_write_outside_a_transaction_names_the_statement_and_the_caller",
            "tests/test_guard_refusals.py::test_code_without_a_module_name_is_still_named_as_the_caller",
            "tests/test_db_guard.py::test_refusals_are_recorded_even_when_swallowed",
        ],
        "the coordinator's COMMIT cannot be replayed by a bare cursor from the statement cache": [
            "tests/test_hot_path.py::test_begin_and_commit_come_from_the_statement_cache_and_a_bare_cursor_cannot_commit",
            "tests/test_db_guard.py::test_a_statement_first_prepared_by_a_bare_cursor_cannot_prime_the_cache",
            "tests/test_db_guard.py::test_a_cached_write_replayed_after_its_transaction_is_refused",
        ],
        "hoc-drivers audit finds a commit or a write in our source however it is spelled": [
            "tests/test_audit.py::test_an_added_module_that_commits_fails_the_audit",
            "tests/test_audit.py::test_transaction_control_is_a_commit_however_it_is_spelled",
            "tests/test_audit.py::test_write_sql_is_a_write_however_it_is_spelled",
        ],
    },
    "Nothing partial, nothing lost.": {
        "a transaction that raises leaves no row behind and the caller sees its error": [
            "tests/test_transaction_coordinator.py::test_exception_rolls_back_every_write_and_publishes_nothing",
            "tests/test_transaction_coordinator.py::test_injected_failure_at_trace_step_leaves_nothing",
            "tests/test_coordinator_edges.py::"
            "test_the_callers_error_survives_a_rollback_sqlite_already_did_and_nothing_is_logged",
            "tests/test_reliability.py::test_sigkill_at_random_points_leaves_only_whole_transactions",
        ],
        "a full disk reports SQLite's own error, never a failed ROLLBACK": [
            "tests/test_reliability.py::test_a_full_disk_reports_sqlites_own_error_and_leaves_nothing",
        ],
        "ON CONFLICT ROLLBACK ends the block: nothing after it written, nothing reported committed": [
            "tests/test_db_guard.py::test_a_statement_rollback_inside_a_coordinator_block_cannot_commit_half",
            "tests/test_guard_refusals.py::"
            "test_a_prepared_write_after_sqlite_rolled_the_transaction_back_is_refused_not_autocommitted",
            "tests/test_guard_refusals.py::"
            "test_the_coordinator_does_not_report_a_commit_of_work_sqlite_already_threw_away",
        ],
        "events, cache invalidations and on_commit work only after COMMIT (not a rolled-back savepoint's)": [
            "tests/test_transaction_coordinator.py::test_callbacks_run_after_commit_and_never_after_rollback",
            "tests/test_promises_outbox.py::test_events_of_a_rolled_back_savepoint_are_neither_stored_nor_published",
            "tests/test_promises_outbox.py::test_facts_of_a_rolled_back_savepoint_reach_no_subscriber",
            "tests/test_coordinator_edges.py::"
            "test_a_failing_savepoint_drops_only_the_callbacks_events_and_facts_it_added",
        ],
        "one failing subscriber or callback does not stop the others": [
            "tests/test_promises_outbox.py::test_one_failing_event_subscriber_does_not_stop_the_others",
            "tests/test_promises_outbox.py::test_one_failing_fact_subscriber_does_not_stop_the_others_nor_the_events",
            "tests/test_transaction_coordinator.py::test_failing_callback_is_recorded_and_does_not_hide_the_others",
        ],
        "at least once: flush_outbox() publishes unmarked events again, oldest first, with the same id": [
            "tests/test_transaction_coordinator.py::test_events_left_unpublished_by_a_crash_are_published_by_flush",
            "tests/test_reliability.py::test_a_republished_event_keeps_its_id_for_subscribers_to_deduplicate",
            "tests/test_promises_outbox.py::test_flush_outbox_publishes_left_over_events_oldest_first",
            "tests/test_promises_outbox.py::test_a_failed_mark_published_leaves_no_dead_transaction_for_later_work_to_join",
        ],
        "published events are marked at the next transaction and at a normal exit": [
            "tests/test_reliability.py::test_a_clean_exit_leaves_no_event_to_publish_again",
            "tests/test_coordinator_edges.py::test_mark_published_records_every_published_event",
        ],
        "event ids sort by time; every row a transaction writes carries its one tx.now": [
            "tests/test_hot_path.py::test_outbox_ids_sort_by_time_so_the_outbox_grows_at_its_end",
            "tests/test_hot_path.py::test_every_row_of_a_transaction_carries_its_one_timestamp",
            "tests/test_run_completion_edges.py::test_every_step_is_stamped_with_the_transactions_one_timestamp",
        ],
        "completing a run twice is ALREADY_COMPLETED; inside a caller's transaction it is JOINED": [
            "tests/test_transaction_coordinator.py::test_completing_a_run_twice_keeps_one_incident_and_one_policy_row",
            "tests/test_transaction_coordinator.py::test_a_repeat_with_another_status_changes_nothing",
            "tests/test_transaction_coordinator.py::"
            "test_inside_an_enclosing_transaction_it_reports_joined_and_rolls_back_with_it",
            "tests/test_concurrency.py::test_four_processes_completing_the_same_runs_complete_each_once",
        ],
        "network alerts are queued in the caller's transaction, delivered later with retry and backoff": [
            "tests/test_alert_emitter.py::test_network_channels_are_queued_in_the_callers_transaction",
            "tests/test_alert_emitter.py::test_a_rolled_back_transaction_queues_nothing",
            "tests/test_alert_sender.py::test_backoff_doubles_up_to_the_cap",
            "tests/test_alert_sender.py::test_server_down_retries_with_growing_delays_then_delivers_once",
            "tests/test_reliability.py::test_receiver_failing_first_requests_then_recovering_gets_every_alert_once",
        ],
    },
    "Delivery time is bounded, and two senders never deliver one alert at once.": {
        "--timeout (default 10 s) bounds each whole delivery, however slowly the receiver trickles": [
            "tests/test_alert_sender.py::test_delivery_has_a_timeout",
            "tests/test_alert_sender.py::test_a_trickling_receiver_is_abandoned_at_the_deadline_and_retried",
            "tests/test_alert_sender_edges.py::test_a_delivery_out_of_time_before_it_connects_is_a_failed_attempt",
            "tests/test_promises_misc.py::"
            "test_delivery_time_alerts_send_claims_for_ten_alerts_times_a_10_second_deadline_plus_5_by_default",
        ],
        "a sender claims a batch for batch size x (deadline + 5 s)": [
            "tests/test_alert_sender_promises.py::test_a_claim_outlasts_the_delivery_deadline_plus_its_margin",
            "tests/test_alert_sender_edges.py::test_a_sender_claims_ten_alerts_a_batch_by_default",
            "tests/test_alert_sender_promises.py::test_a_lease_is_refused_unless_positive",
        ],
        "no delivery starts that the lease cannot cover": [
            "tests/test_alert_sender.py::test_no_delivery_starts_once_the_lease_cannot_cover_its_deadline",
            "tests/test_alert_sender_edges.py::test_a_delivery_starts_while_the_lease_covers_its_whole_deadline",
        ],
        "an outcome is recorded only while the alert still carries the sender's claim token": [
            "tests/test_alert_sender.py::test_an_outcome_whose_claim_was_taken_over_changes_nothing_and_is_logged",
            "tests/test_alert_sender_edges.py::test_an_outcome_whose_claim_was_taken_over_is_lost_and_changes_nothing",
            "tests/test_alert_driver.py::test_an_outcome_without_the_current_claim_token_changes_nothing",
        ],
        "two senders never deliver one alert at once": [
            "tests/test_alert_sender.py::test_two_senders_and_a_trickling_receiver_deliver_the_alert_once",
            "tests/test_alert_sender.py::test_two_sender_processes_deliver_each_of_1000_alerts_exactly_once",
            "tests/test_alert_driver.py::test_two_concurrent_claimers_never_share_an_alert",
        ],
        "a receiver that answered after the deadline receives the alert again (at least once)": [
            "tests/test_alert_sender_promises.py::"
            "test_a_receiver_that_answers_after_the_deadline_receives_the_alert_again_on_the_retry",
        ],
        "SMTP credentials go only inside STARTTLS, to a server whose certificate is checked": [
            "tests/test_alert_sender_promises.py::test_smtp_credentials_are_never_sent_without_starttls",
            "tests/test_alert_sender_edges.py::test_offered_starttls_is_used_and_the_credentials_go_inside_it",
            "tests/test_alert_sender_edges.py::test_an_offered_starttls_is_asked_for_before_any_mail",
            "tests/test_alert_sender_edges.py::test_starttls_checks_the_servers_certificate",
        ],
        "only http(s) URLs are delivered, exactly as given; anything else fails at once, unretried": [
            "tests/test_alert_sender_promises.py::"
            "test_a_destination_that_is_not_an_http_url_is_failed_at_once_never_delivered_or_retried",
            "tests/test_alert_sender_promises.py::test_the_webhook_request_line_is_exactly_the_destination_path",
            "tests/test_alert_sender.py::test_http_errors_and_redirects_are_retried_not_followed",
            "tests/test_alert_sender.py::test_an_alert_without_a_destination_fails_at_once_and_shows_in_stats",
        ],
        "refused recipients are not reported sent": [
            "tests/test_alert_sender_promises.py::test_refused_recipients_are_not_reported_sent",
        ],
        "a sender neither spins nor raises: spent alerts are never due, a wake is used once": [
            "tests/test_alert_sender_promises.py::test_next_due_at_ignores_alerts_that_can_never_be_claimed",
            "tests/test_alert_queue_edges.py::test_alerts_whose_attempts_are_used_up_are_never_due",
            "tests/test_alert_sender_promises.py::test_a_serving_sender_goes_back_to_waiting_after_a_wake",
            "tests/test_alert_sender_promises.py::test_a_serving_sender_waits_the_poll_after_a_database_error",
            "tests/test_alert_sender.py::test_the_sender_never_raises_into_its_caller",
        ],
    },
    "Bad input is refused before anything is written.": {
        "caller JSON nests at most 32 levels and encodes to at most 64 KiB": [
            "tests/test_security.py::test_json_over_the_limits_is_refused_by_every_api_and_writes_nothing",
            "tests/test_security.py::test_json_at_the_limits_is_stored",
            "tests/test_cli_bad_input.py::test_json_options_refuse_deep_and_huge_values_and_write_nothing",
            "tests/test_cli_bad_input.py::test_json_at_the_limits_is_accepted_from_a_file",
            "tests/test_hot_path.py::test_json_too_deep_is_the_error_whatever_the_encoder_says",
        ],
        "bad input to any command exits 2 in one line and writes nothing": [
            "tests/test_cli_bad_input.py::test_every_command_has_a_bad_input_case",
            "tests/test_cli_bad_input.py::test_bad_input",
            "tests/test_cli_core.py::test_bad_input_is_one_line_nonzero_and_writes_nothing",
            "tests/test_security.py::test_fuzzed_cli_arguments_never_traceback",
        ],
        "a command that reports failure has committed nothing": [
            "tests/test_cli_core.py::test_a_command_failing_before_its_output_is_printed_commits_nothing",
            "tests/test_cli_guard_costs.py::test_governance_failure_is_one_line_exit_1_and_writes_nothing",
        ],
    },
    "The database you name is the one used.": {
        "--db wherever written, else $HOC_DRIVERS_DB, else ./hoc.db": [
            "tests/test_cli_core.py::test_db_flag_wins_over_the_environment_wherever_it_is_written",
            "tests/test_db_guard.py::test_environment_variable_names_the_default_database",
            "tests/test_settings.py::test_each_layer_wins_over_the_one_below_for_the_database",
            "tests/test_cli_core.py::test_empty_db_path_is_bad_input_not_the_default_file",
        ],
        "only init and demo create a database; a missing file exits 2 naming the path": [
            "tests/test_cli_core.py::test_a_missing_database_is_bad_input_and_is_never_created",
            "tests/test_cli_core.py::test_the_default_and_the_environment_path_are_not_created_either",
            "tests/test_db_guard.py::test_opening_without_create_refuses_a_missing_file_and_creates_nothing",
            "tests/test_cli_decisions_ledger.py::test_bad_input_does_not_create_a_database",
        ],
        "a drifted schema is refused in one line": [
            "tests/test_cli_core.py::test_a_drifted_database_is_refused_in_one_line",
            "tests/test_schema_parity.py::test_the_startup_guard_takes_the_fast_path_only_for_an_exact_schema",
        ],
        "schema check reports corruption (quick_check, --integrity)": [
            "tests/test_schema_parity.py::test_a_corrupted_table_page_is_an_integrity_error",
            "tests/test_schema_parity.py::test_an_index_out_of_step_with_its_table_needs_the_full_integrity_check",
        ],
    },
    "Policies cannot hang, read outside their folder, or pass silently.": {
        "matches() runs RE2 in linear time, within its length limits": [
            "tests/test_policy_language.py::test_catastrophic_patterns_take_linear_time_through_the_language",
            "tests/test_policy_language.py::test_matches_length_limits",
        ],
        "a pattern RE2 refuses is a located compile error, or a DENY when it comes from the context": [
            "tests/test_policy_language.py::test_patterns_re2_refuses_are_compile_errors_at_the_pattern",
            "tests/test_policy_language.py::test_a_refused_pattern_from_the_context_fails_the_node_closed",
        ],
        "imports stay inside the importing file's folder tree and echo no other file's content": [
            "tests/test_policy_language.py::test_imports_stay_in_the_importing_files_folder_and_echo_no_content",
            "tests/test_policy_language.py::test_imports_inside_the_folder_tree_may_use_dots_and_symlinks",
            "tests/test_plang_compiler_edges.py::test_an_import_refusal_is_p105_with_its_whole_reason",
        ],
        "unknown functions and wrong argument counts are compile errors at FILE:LINE:COL": [
            "tests/test_policy_language.py::test_compile_errors_have_line_and_column",
            "tests/test_cli_dag.py::test_check_failure_prints_file_line_col_message",
        ],
        "dag run names the context paths not found; --strict exits 2; --fail-on exits 3": [
            "tests/test_cli_dag.py::test_run_on_an_empty_context_names_what_the_policies_did_not_find",
            "tests/test_cli_dag.py::test_strict_refuses_a_context_that_lacks_what_the_policies_read",
            "tests/test_cli_dag.py::test_fail_on_exits_3_at_that_action_or_a_more_restrictive_one",
            "tests/test_dag_executor.py::test_the_trace_lists_the_context_paths_read_but_not_found",
        ],
        "an erroring node, a cycle, a step limit or a context that is not an object fails closed": [
            "tests/test_promises_policy.py::test_a_context_that_is_not_an_object_fails_the_node_closed",
            "tests/test_promises_policy.py::test_the_executor_refuses_a_context_that_is_not_an_object",
            "tests/test_promises_policy.py::test_and_short_circuits_so_an_erroring_operand_after_a_false_one_is_never_evaluated",
            "tests/test_dag_executor.py::test_an_erroring_node_fails_closed_in_the_trace",
            "tests/test_dag_executor.py::test_step_limit_in_the_executor_fails_closed",
            "tests/test_dag_executor.py::test_explicit_plan_and_unknown_names_fail_closed",
            "tests/test_policy_language.py::test_self_reference_fails_closed_with_the_cycle_in_the_error",
            "tests/test_policy_language.py::test_default_step_limit_stops_exponential_rule_chains",
        ],
    },
    "Secrets stay out of logs.": {
        "--debug logs and errors redact URL credentials, Slack/Discord tokens, secret query parameters": [
            "tests/test_security.py::test_redact_hides_credentials_and_tokens_only",
            "tests/test_security.py::test_debug_logs_and_error_messages_never_show_credentials_or_tokens",
        ],
        "the webhook HMAC secret is never logged, printed or stored in the clear": [
            "tests/test_security.py::test_webhook_secret_never_appears_in_cli_output_or_logs",
            "tests/test_cli_alerts_guard.py::test_enqueue_queues_a_signed_webhook_and_never_prints_the_secret",
            "tests/test_alert_emitter.py::test_the_secret_is_never_shown",
            "tests/test_alert_emitter.py::test_the_secret_is_stored_nowhere",
            "tests/test_settings.py::test_a_webhook_secret_from_the_file_signs_and_is_never_printed",
        ],
        "the SMTP password is never logged or printed": [
            "tests/test_security.py::test_debug_logs_and_error_messages_never_show_credentials_or_tokens",
            "tests/test_promises_misc.py::"
            "test_secrets_stay_out_of_logs_the_smtp_password_is_never_logged_or_printed_by_alerts_send",
            "tests/test_promises_misc.py::test_secrets_stay_out_of_logs_settings_shows_the_smtp_password_as_stars",
        ],
    },
    "Tenants never see each other.": {
        "every read API takes the tenant and filters by it": [
            "tests/test_security.py::test_tenants_never_see_each_other_through_the_read_apis",
            "tests/test_security.py::test_tenants_never_see_each_other_through_the_cli",
            "tests/test_contract.py::test_first_parameter_and_tenant_position",
            "tests/test_alert_queue_edges.py::test_operator_reads_keep_the_tenant_under_every_filter",
            "tests/test_guard_write_driver.py::test_reader_is_tenant_scoped",
            "tests/test_worker_write_service.py::test_runs_are_tenant_scoped",
            "tests/test_idempotency.py::test_tenant_a_never_sees_tenant_b_runs",
            "tests/test_decisions.py::test_list_is_tenant_filtered_and_filters_by_run_request_and_type",
            "tests/test_alert_emitter.py::test_notifications_are_read_per_tenant_and_acknowledged_once",
        ],
        "a write touches its own tenant's rows only": [
            "tests/test_guard_write_driver.py::test_a_switch_of_another_tenant_cannot_be_touched",
            "tests/test_guard_write_driver.py::test_an_incident_of_another_tenant_cannot_be_moved",
            "tests/test_promises_outbox.py::test_a_replayed_run_completion_reports_its_own_tenants_records",
            "tests/test_promises_outbox.py::test_a_run_completion_bumps_the_incident_count_of_its_own_tenants_run_only",
            "tests/test_transaction_coordinator.py::test_trace_of_another_tenant_is_not_touched",
            "tests/test_alert_driver.py::test_mark_incident_alert_sent_is_tenant_filtered",
            "tests/test_cli_guard_costs.py::test_killswitch_is_tenant_scoped",
        ],
        "each database file has its own guard cache, so a shared tenant id shares nothing": [
            "tests/test_guard_cache.py::test_two_databases_with_one_tenant_id_never_share_entries",
            "tests/test_guard_cache.py::test_a_cache_serves_one_database_only",
            "tests/test_promises_cache.py::test_a_cache_serving_an_in_memory_database_refuses_another_by_name",
            "tests/test_guard_cache.py::test_in_memory_databases_each_have_their_own_cache_and_are_forgotten",
        ],
        "invalidating one tenant leaves every other tenant's entries": [
            "tests/test_guard_cache.py::test_invalidate_tenant_removes_exactly_that_tenants_entries",
            "tests/test_guard_cache.py::test_another_tenants_write_leaves_my_entries",
            "tests/test_promises_cache.py::test_invalidating_one_tenant_does_not_refuse_another_tenants_fresh_value",
        ],
    },
    "No stale guard reads after a write.": {
        "switches, incidents, signals, runs and costs invalidate after COMMIT, never before or on rollback": [
            "tests/test_guard_cache.py::test_invalidation_runs_after_commit_only",
            "tests/test_guard_cache.py::test_a_rolled_back_transaction_invalidates_nothing",
            "tests/test_guard_cache.py::test_freezing_the_kill_switch_shows_at_once_inside_the_ttl",
            "tests/test_guard_cache.py::test_incident_creation_and_resolution_invalidate_after_commit",
            "tests/test_guard_cache.py::test_a_new_run_or_cost_refreshes_only_the_snapshot_after_commit",
            "tests/test_guard_cache.py::test_recording_a_signal_refreshes_the_tenants_guard_status_after_commit",
            "tests/test_guard_write_driver.py::test_every_write_invalidates_the_tenant_cache_after_commit_only",
            "tests/test_cross_domain.py::test_rolled_back_incident_invalidates_nothing",
            "tests/test_promises_idempotency.py::test_a_new_claim_refreshes_the_tenants_cached_snapshot_after_commit",
        ],
        "a value read before a write is never stored after it": [
            "tests/test_guard_cache.py::test_a_value_read_before_an_invalidation_is_not_stored_after_it",
            "tests/test_guard_cache.py::test_a_write_committed_during_a_miss_is_not_cached_stale",
            "tests/test_promises_cache.py::test_a_value_read_before_one_entry_is_invalidated_is_not_stored_after_it",
            "tests/test_promises_cache.py::test_every_invalidation_refuses_a_value_read_before_it",
            "tests/test_promises_cache.py::test_a_value_read_before_another_connections_commit_is_not_stored_after_it",
        ],
        "for every connection to that file in the process": [
            "tests/test_guard_cache.py::test_a_commit_on_another_connection_to_the_file_invalidates",
        ],
        "another process's commits show within 100 ms (PRAGMA data_version)": [
            "tests/test_guard_cache.py::test_a_commit_by_another_process_is_seen_within_100_ms",
        ],
        "on PostgreSQL a commit reaches every process at once": [
            "tests/test_notify.py::test_a_freeze_committed_in_another_process_is_seen_on_the_next_read",
        ],
    },
    "Parity with the server edition.": {
        "the cost tables carry the server's indexes and defaults; a plain INSERT leaving them out works": [
            "tests/test_schema_parity.py::test_each_server_index_of_the_cost_tables_is_required",
            "tests/test_schema_parity.py::test_each_database_default_of_the_cost_tables_is_required",
            "tests/test_schema_parity.py::test_a_plain_insert_leaving_out_the_defaulted_columns_works",
        ],
        "schema parity compares defaults: an error in the cost tables, a warning elsewhere": [
            "tests/test_schema_parity.py::test_a_cost_table_default_is_an_error_for_schema_check_too",
            "tests/test_schema_parity.py::test_a_default_elsewhere_is_a_warning",
        ],
        "a cost-anomaly incident records its overage in cents and in currency units": [
            "tests/test_cross_domain.py::test_docstring_example_fields",
            "tests/test_cross_domain.py::test_overage_edges",
        ],
        "the server's names import from the same modules, none with a hidden global database": [
            "tests/test_seed_names.py::test_every_server_name_imports_from_its_seed_module",
            "tests/test_seed_names.py::test_guard_cache_get_instance_is_the_cache_of_that_database",
            "tests/test_contract.py::test_readers_read_the_database_they_are_given_not_the_last_opened",
        ],
    },
    "An operator's console.": {
        "alerts list/show/retry/delete and history answer an operator from the CLI": [
            "tests/test_cli_alerts_guard.py::test_an_operator_sees_which_alerts_failed_for_a_tenant_and_why",
            "tests/test_cli_listing.py::test_an_operator_answers_the_daily_questions_without_sqlite3",
        ],
        "stored configs throttle across invocations": [
            "tests/test_cli_alerts_guard.py::test_two_cli_enqueues_with_a_stored_config_throttle_the_second",
            "tests/test_alert_emitter.py::test_a_stored_config_throttles_across_transactions_and_keeps_the_signals",
            "tests/test_concurrency.py::test_processes_alerting_through_one_stored_config_at_once_are_throttled_to_one_alert",
        ],
        "notifications list/ack, scoped to one tenant unless --all-tenants": [
            "tests/test_cli_notifications.py::test_list_a_tenants_notifications_and_acknowledge_one",
            "tests/test_cli_killswitch_history.py::test_list_a_tenants_switches_or_every_frozen_one",
        ],
        "an alert being delivered cannot be retried or deleted": [
            "tests/test_alert_driver.py::test_an_alert_being_delivered_cannot_be_deleted_or_retried",
            "tests/test_cli_alerts_guard.py::test_retry_and_delete_one_alert_but_not_one_being_delivered",
            "tests/test_alert_queue_edges.py::test_an_operator_waits_for_a_claim_in_progress_and_then_finds_the_alert_busy",
        ],
        "every freeze and unfreeze is kept with who, why and when": [
            "tests/test_guard_write_driver.py::test_every_freeze_and_unfreeze_is_kept_with_who_why_and_when",
            "tests/test_cli_killswitch_history.py::test_who_froze_this_switch_when_why_and_when_it_ends",
            "tests/test_cli_killswitch_history.py::test_the_unfreeze_reason_is_kept_and_history_is_newest_first",
        ],
        "a timed freeze ends by itself and no cached guard status outlives it": [
            "tests/test_cli_killswitch_history.py::test_a_timed_freeze_ends_by_itself_without_any_process",
            "tests/test_guard_write_driver.py::test_a_timed_freeze_ends_by_itself",
            "tests/test_guard_cache.py::test_a_cached_frozen_status_is_never_served_past_the_end_time",
            "tests/test_guard_cache.py::test_a_key_freeze_ending_caps_the_status_entry_too",
        ],
    },
    "Lists behave the same everywhere.": {
        "newest first, with --since/--until, --offset and --limit": [
            "tests/test_cli_listing.py::test_lists_are_newest_first_with_a_window_and_an_offset",
        ],
        "a table fitted to the terminal, --json, --csv or --nl": [
            "tests/test_cli_listing.py::test_csv_and_nl_carry_every_key",
            "tests/test_cli_listing.py::test_tables_fit_the_terminal_and_show_seconds",
            "tests/test_docs.py::test_every_command_takes_json_and_db",
        ],
        "amounts are exact JSON numbers": [
            "tests/test_cli_listing.py::test_decimals_are_json_numbers_keeping_exactness",
        ],
        "ids may be given as a unique prefix": [
            "tests/test_cli_listing.py::test_incidents_show_takes_a_unique_prefix",
            "tests/test_cli_listing.py::test_an_ambiguous_prefix_exits_2",
            "tests/test_cli_listing.py::test_alert_and_notification_commands_take_a_unique_id_prefix",
        ],
    },
    "Settings in one place.": {
        "every setting is declared once and documented from there": [
            "tests/test_docs.py::test_the_settings_section_is_generated_from_the_declarations",
            "tests/test_settings.py::test_no_module_reads_the_environment_but_settings",
        ],
        "a flag, else its variable, else the TOML file, else the default": [
            "tests/test_settings.py::test_each_layer_wins_over_the_one_below_for_the_database",
            "tests/test_settings.py::test_which_file_is_read_config_flag_then_variable_then_the_local_file",
            "tests/test_settings.py::test_smtp_settings_come_from_the_file_under_the_environment",
        ],
        "hoc-drivers settings shows each value and its source, secrets as ***": [
            "tests/test_settings.py::test_a_webhook_secret_from_the_file_signs_and_is_never_printed",
            "tests/test_promises_misc.py::test_secrets_stay_out_of_logs_settings_shows_the_smtp_password_as_stars",
        ],
    },
    "PLang is documented by examples that run.": {
        "every example in docs/plang.md runs with the decision or error it documents": [
            "tests/test_plang_docs.py::test_example_runs_as_documented",
            "tests/test_plang_docs.py::test_a_wrong_expectation_is_caught",
        ],
        "dag fmt changes only whitespace, and --check fails on an unformatted file": [
            "tests/test_plang_fmt.py::test_fmt_keeps_meaning_and_is_idempotent",
            "tests/test_plang_fmt.py::test_fmt_of_generated_policies_is_the_generator_layout",
            "tests/test_plang_fmt.py::test_fmt_check_and_diff_fail_on_a_file_that_would_change",
        ],
        "dag test fails on a broken case and --coverage names every when no case fired": [
            "tests/test_plang_tests.py::test_a_policy_change_that_breaks_a_case_fails_it",
            "tests/test_plang_tests.py::test_coverage_names_each_rule_no_case_fired",
        ],
        "dag check --strict reports every error and warning with a documented code": [
            "tests/test_plang_check.py::test_check_reports_every_error_located_with_its_code",
            "tests/test_plang_check.py::test_warnings_are_printed_and_strict_makes_them_errors",
            "tests/test_plang_check.py::test_every_code_in_the_source_is_in_the_documented_table",
        ],
        "dag run --context - reads stdin as a pipeline step": [
            "tests/test_dag_run_context.py::test_context_from_stdin_decides_and_fails_the_pipeline",
        ],
    },
    "Upgrades and backups.": {
        "a file of an older schema version refuses to run and says to migrate": [
            "tests/test_migrations.py::test_init_records_the_schema_version",
            "tests/test_migrations.py::test_commands_on_an_older_file_say_to_run_migrate_and_change_nothing",
        ],
        "migrate backs up first and keeps every row, or changes nothing": [
            "tests/test_migrations.py::test_migrate_keeps_every_row_and_passes_schema_check",
            "tests/test_migrations.py::test_a_migration_that_cannot_finish_changes_nothing",
        ],
        "backup is a consistent snapshot while other processes write": [
            "tests/test_migrations.py::test_a_backup_taken_while_four_processes_write_is_consistent",
        ],
    },
    "WAL, `BEGIN IMMEDIATE`, a busy timeout": {
        "several processes can write one file": [
            "tests/test_db_guard.py::test_pragmas_and_owner_only_file",
            "tests/test_dialect.py::test_each_dialect_has_its_begin_and_its_trigger_ddl",
            "tests/test_reliability.py::test_four_processes_times_500_run_completions",
            "tests/test_concurrency.py::test_four_processes_completing_their_own_runs_lose_nothing",
        ],
    },
    "Deploy gates start fast and answer alike.": {
        "a gate reads read-only, without Peewee, only a current plain file": [
            "tests/test_gates.py::test_a_gate_loads_neither_peewee_nor_a_driver",
            "tests/test_gates.py::test_the_gate_connection_is_read_only",
            "tests/test_gates.py::test_only_a_current_plain_file_gets_a_gate_connection",
            "tests/test_gates_schema.py::test_what_init_writes_passes_and_any_change_does_not",
        ],
        "a gate decides and prints as the drivers do": [
            "tests/test_gates.py::test_signals_check_reads_and_decides_as_the_reader",
            "tests/test_gates.py::test_killswitch_status_reads_and_decides_as_the_reader",
            "tests/test_gates.py::test_guard_status_reads_and_decides_as_the_reader",
            "tests/test_gates.py::test_each_gate_prints_what_the_drivers_path_prints",
        ],
    },
    "The same commit authority.": {
        "the server refuses a write outside the coordinator's BEGIN READ WRITE": [
            "tests/test_db_guard.py::test_write_outside_a_transaction_is_refused_and_reads_are_not",
            "tests/test_db_guard.py::test_a_write_outside_a_transaction_is_refused_however_spelled_and_sent",
            "tests/test_dialect.py::test_each_dialect_has_its_begin_and_its_trigger_ddl",
        ],
        "transaction and session control from anywhere else is refused": [
            "tests/test_dialect.py::test_postgresql_transaction_and_session_control_is_recognised_however_spelled",
            "tests/test_db_guard.py::test_transaction_control_is_refused_however_spelled_and_sent",
        ],
    },
    "Writers run side by side, and correctly.": {
        "every read-then-write is protected; raced from several processes on both backends": [
            "tests/test_concurrency.py::test_processes_claiming_one_key_at_once_make_one_owner",
            "tests/test_concurrency.py::test_processes_claiming_one_expired_key_at_once_replace_it_once",
            "tests/test_concurrency.py::test_four_processes_completing_the_same_runs_complete_each_once",
            "tests/test_concurrency.py::"
            "test_processes_recording_a_scope_signal_at_once_leave_one_active_each_superseding_the_last",
            "tests/test_concurrency.py::test_processes_saving_one_config_name_at_once_store_one_config",
            "tests/test_concurrency.py::test_processes_upserting_one_new_worker_run_at_once_create_it_once",
            "tests/test_concurrency.py::test_processes_completing_one_worker_run_at_once_complete_it_once",
            "tests/test_concurrency.py::test_a_purge_waiting_on_a_revival_does_not_delete_the_revived_alert",
            "tests/test_idempotency.py::test_eight_processes_claiming_one_key_create_one_run",
            "tests/test_decisions.py::test_once_only_emitter_from_four_processes_at_once_writes_one_row",
            "tests/test_ledger.py::test_four_processes_emitting_one_key_leave_one_row",
        ],
        "senders claim alerts with FOR UPDATE SKIP LOCKED and never share one": [
            "tests/test_alert_driver.py::test_two_concurrent_claimers_never_share_an_alert",
            "tests/test_concurrency.py::test_row_locks_are_taken_on_postgresql_and_cost_sqlite_nothing",
        ],
        "docs/concurrency.md lists what protects each writer": [
            "tests/test_concurrency.py::test_the_concurrency_table_names_functions_that_exist",
        ],
    },
    "Fresh across hosts.": {
        "a freeze committed on one host is seen by the next guard read on another": [
            "tests/test_notify.py::test_a_freeze_committed_in_another_process_is_seen_on_the_next_read",
            "tests/test_notify.py::test_this_process_gets_its_own_facts_once",
        ],
        "notifications are delivered only if the transaction commits": [
            "tests/test_notify.py::test_a_freeze_rolled_back_in_another_process_notifies_nothing",
        ],
        "the listening connection wakes the alert sender": [
            "tests/test_notify.py::test_an_alert_queued_in_another_process_wakes_a_serving_sender",
        ],
        "a dropped listener reconnects and clears the whole cache": [
            "tests/test_notify.py::test_a_listener_whose_connection_is_killed_clears_the_cache_and_listens_again",
        ],
    },
    "The same data.": {
        "insertion order is a real column on both backends": [
            "tests/test_portable_schema.py::test_every_table_listed_in_insertion_order_is_keyed_by_seq",
            "tests/test_portable_schema.py::test_ties_list_in_insertion_order_even_after_an_update",
        ],
        "the worker-run immutability trigger exists on both": [
            "tests/test_portable_schema.py::test_the_worker_run_immutability_trigger_refuses_a_raw_update",
            "tests/test_worker_write_service.py::test_database_trigger_refuses_raw_updates_of_terminal_runs",
        ],
        "schema parity reads PostgreSQL's catalog": [
            "tests/test_portable_schema.py::test_schema_parity_reports_a_drifted_postgresql_column",
            "tests/test_dialect.py::test_schema_parity_reads_the_catalog_of_either_backend",
        ],
        "text containing NUL is refused on both as bad input": [
            "tests/test_security.py::test_text_holding_nul_is_refused_as_bad_input_and_nothing_is_written",
            "tests/test_security.py::test_the_cli_refuses_nul_text_with_a_message",
            "tests/test_portable_schema.py::test_text_holding_nul_is_refused_before_it_is_sent",
        ],
    },
}


def readme_titles():
    """The bold titles of the bullets in the README's guarantee sections, in order."""
    titles, inside = [], False
    for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            inside = line.startswith(SECTIONS)
        elif inside and (match := re.match(r"- \*\*(.+?)\*\*", line)):
            titles.append(match.group(1))
    return titles


def defined_names(path):
    """The names a test module defines, read from its source (a module may skip itself when
    imported, e.g. without the pg extra): "NAME" for each top-level function,
    "CLASS::NAME" for each method of a top-level class."""
    if path not in _DEFINED:
        names = set()
        for node in ast.parse((REPO / path).read_text(encoding="utf-8")).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(node.name)
            elif isinstance(node, ast.ClassDef):
                names.update(f"{node.name}::{item.name}" for item in node.body
                             if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)))
        _DEFINED[path] = names
    return _DEFINED[path]


_DEFINED = {}


def test_every_readme_guarantee_has_an_entry_in_the_index():
    titles = readme_titles()
    assert len(titles) >= 20  # the parser still finds the README's bullets
    missing = [title for title in titles if title not in PROMISES]
    assert not missing, f"README guarantees with no tests listed in PROMISES: {missing}"
    stale = [title for title in PROMISES if title not in titles]
    assert not stale, f"PROMISES titles no longer in the README (renamed or dropped?): {stale}"


def test_every_promise_names_at_least_one_test():
    empty = [(title, promise) for title, promises in PROMISES.items()
             for promise, tests in promises.items() if not tests]
    assert not empty, f"promises without a test: {empty}"
    assert all(PROMISES.values()), "a README guarantee lists no promise"


@pytest.mark.parametrize("title", list(PROMISES))
def test_every_listed_test_exists(title):
    gone = []
    for promise, tests in PROMISES[title].items():
        for test in tests:
            path, _, name = test.partition("::")
            if not (path.startswith("tests/test_") and (REPO / path).is_file()
                    and name.rpartition("::")[2].startswith("test")
                    and name.split("[")[0] in defined_names(path)):
                gone.append(f"{promise}: {test}")
    assert not gone, f"{title}: listed tests that do not exist: {gone}"
