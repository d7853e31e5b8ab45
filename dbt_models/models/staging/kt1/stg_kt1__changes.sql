-- One row per kt1 change notification, identified by (doc id, doc type, operation, date);
-- redelivered copies removed.
{{ daily_table('day') }}

with source as (
    {{ lake_source('kt1', 'changes', {
        'batch_id': 'varchar',
        'item_index': 'integer',
        'fetched_at': 'timestamptz',
        'landed_at': 'timestamptz',
        'operation': 'varchar',
        'date': 'timestamptz',
        'doc_id': 'varchar',
        'doc_type': 'varchar',
        'day': 'date',
    }) }}
),

typed as (
    select
        md5(
            'kt1|' || doc_id || '|' || coalesce(doc_type, '') || '|' || operation || '|'
            || cast(epoch_us(cast(date as timestamptz)) as varchar)
        ) as kt1_change_id,
        doc_id,
        doc_type,
        operation,
        cast(date as timestamptz) as changed_at,
        {{ kt1_landing_columns() }}
    from source
),

final as (
    {{ latest_landing('typed', 'doc_id, doc_type, operation, changed_at') }}
)

select * from final
