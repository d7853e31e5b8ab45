-- One row per kt1 event id, redelivered copies removed. `details` keeps the event's own
-- fields (e.g. an idling event's dateStart/dateEnd, a refuel's volume) as JSON.
{{ daily_table('day') }}

with source as (
    {{ lake_source('kt1', 'events', {
        'batch_id': 'varchar',
        'item_index': 'integer',
        'fetched_at': 'timestamptz',
        'landed_at': 'timestamptz',
        'id': 'varchar',
        'owner': 'varchar',
        'origin': 'varchar',
        'event_date': 'timestamptz',
        'event_class': 'varchar',
        'event_type': 'varchar',
        'asset_id': 'varchar',
        'lat': 'double',
        'lon': 'double',
        'address': 'varchar',
        'item_json': 'varchar',
        'day': 'date',
    }) }}
),

typed as (
    select
        md5('kt1|' || id) as kt1_event_id,
        id as source_event_id,
        asset_id as source_vehicle_id,
        origin as origin_id,
        owner as owner_id,
        cast(event_date as timestamptz) as occurred_at,
        event_class,
        event_type,
        lat,
        lon,
        address,
        json_extract(item_json, '$.details') as details,
        {{ kt1_landing_columns() }}
    from source
),

final as (
    {{ latest_landing('typed', 'source_event_id') }}
)

select * from final
