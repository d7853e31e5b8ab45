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
        doc_id,
        doc_type,
        operation,
        cast(date as timestamptz) as changed_at,
        batch_id,
        item_index,
        cast(fetched_at as timestamptz) as fetched_at,
        cast(landed_at as timestamptz) as landed_at,
        cast(day as date) as day
    from source
),

deduplicated as (
    select *
    from typed
    qualify row_number() over (
        partition by doc_id, doc_type, operation, changed_at
        order by landed_at desc, fetched_at desc, item_index desc
    ) = 1
),

final as (
    select
        md5(
            'kt1|' || doc_id || '|' || coalesce(doc_type, '') || '|' || operation || '|'
            || cast(epoch_us(changed_at) as varchar)
        ) as kt1_change_id,
        *
    from deduplicated
)

select * from final
